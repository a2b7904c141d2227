package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apnsd/apnsd/internal/apnstest"
)

// freeAddr returns a loopback address with a free port.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := l.Addr().String()
	l.Close()
	return addr
}

func scrape(t *testing.T, client *http.Client, u string) string {
	t.Helper()
	res, err := client.Get(u)
	must(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	must(t, err)
	if res.StatusCode != 200 {
		t.Fatalf("GET %s: %s", u, res.Status)
	}
	return string(b)
}

// metricValue finds one sample line "name{labels} value" (labels exactly
// as exposed, sorted by name) and returns its value, or "".
func metricValue(body, series string) string {
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			return rest
		}
	}
	return ""
}

// The metrics through the real socket and a real scrape: outcomes by APNs
// status and apnsd error code, refusals, latency histograms, state gauges,
// certificate expiry; the exposition passes promtool check metrics.
func TestMetricsEndpoint(t *testing.T) {
	addr := freeAddr(t)
	h := newHarness(t, harnessOpts{top: "queue_size = 1000", socket: fmt.Sprintf("[metrics]\nlisten = %q", addr)})
	h.sandbox.SetResponder(apnstest.DemoResponder)
	c := h.dial()
	for _, line := range []string{
		`{"token":"aa01","alert":"x"}`,
		`{"token":"0410aa","alert":"x"}`,
		`{"tokens":["aa02","0400aa","zz"],"alert":"x"}`,
		`{"token":"aa03","alert":"x","env":"production"}`,
		`{"token":"aa04","alert":"x","app":"nope"}`,
		`{"tokens":["01"],"app":"nope","alert":"x"}`,
	} {
		c.do(line)
	}
	body := scrape(t, http.DefaultClient, "http://"+addr+"/metrics")
	for series, want := range map[string]string{
		`apnsd_notifications_total{app="app",env="sandbox",outcome="200"}`:    "2",
		`apnsd_notifications_total{app="app",env="sandbox",outcome="410"}`:    "1",
		`apnsd_notifications_total{app="app",env="sandbox",outcome="400"}`:    "1",
		`apnsd_notifications_total{app="app",env="production",outcome="200"}`: "1",
		`apnsd_refused_total{code="unknown_app"}`:                             "2",
		`apnsd_notification_duration_seconds_count{app="app",env="sandbox"}`:  "4",
		`apnsd_apns_request_duration_seconds_count{app="app",env="sandbox"}`:  "4",
		`apnsd_connections_target{app="app",env="production"}`:                "2",
		`apnsd_queue_depth`:    "0",
		`apnsd_in_flight`:      "0",
		`apnsd_queue_capacity`: "1000",
	} {
		if got := metricValue(body, series); got != want {
			t.Errorf("%s = %q, want %q", series, got, want)
		}
	}
	exp := metricValue(body, `apnsd_credential_expiry_timestamp_seconds{app="app",env="sandbox"}`)
	if want := fmt.Sprintf("%g", float64(h.sandboxCert.Cert.NotAfter.Unix())); exp != want {
		t.Errorf("sandbox expiry %q, want %q", exp, want)
	}
	for _, tok := range []string{"aa01", "0410aa", "0400aa", "aa02"} {
		if strings.Contains(body, tok) {
			t.Errorf("token %s appears in the metrics", tok)
		}
	}
	// Connections come up on their own; wait for the gauge to say so.
	waitFor(t, func() bool {
		return metricValue(scrape(t, http.DefaultClient, "http://"+addr+"/metrics"), `apnsd_connections_up{app="app",env="sandbox"}`) == "1"
	})
	// A reload is counted by result.
	if _, err := h.d.Reload(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	body = scrape(t, http.DefaultClient, "http://"+addr+"/metrics")
	if got := metricValue(body, `apnsd_reloads_total{kind="config",result="ok"}`); got != "1" {
		t.Errorf("config reloads ok = %q, want 1", got)
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: install Debian's prometheus package (scripts/deps.sh does)")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// Without [metrics] nothing is served and the hooks are no-ops; with a
// unix: listen address the endpoint is a Unix socket.
func TestMetricsUnixSocket(t *testing.T) {
	dir := shortTempDir(t)
	sock := filepath.Join(dir, "metrics.sock")
	h := newHarness(t, harnessOpts{socket: fmt.Sprintf("[metrics]\nlisten = \"unix:%s\"", sock)})
	h.dial().do(`{"token":"aa","alert":"x"}`)
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	body := scrape(t, client, "http://apnsd/metrics")
	if got := metricValue(body, `apnsd_notifications_total{app="app",env="sandbox",outcome="200"}`); got != "1" {
		t.Errorf("over the unix socket: 200s = %q", got)
	}
	h2 := newHarness(t, harnessOpts{})
	if h2.d.metrics != nil {
		t.Error("metrics built without [metrics]")
	}
	h2.dial().do(`{"token":"aa","alert":"x"}`)
}

// A real Prometheus server (Debian's /usr/bin/prometheus) scrapes apnsd on
// loopback; the test waits for the target to be up through Prometheus' HTTP
// API and queries a metric apnsd exported.
func TestMetricsScrapedByPrometheus(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus not found: install Debian's prometheus package (scripts/deps.sh does)")
	}
	addr := freeAddr(t)
	h := newHarness(t, harnessOpts{socket: fmt.Sprintf("[metrics]\nlisten = %q", addr)})
	c := h.dial()
	for range 3 {
		c.do(`{"token":"aa","alert":"x"}`)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	must(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: apnsd
    static_configs:
      - targets: [%q]
`, addr)), 0o644))
	promAddr := freeAddr(t)
	var out bytes.Buffer
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+promAddr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = &out, &out
	must(t, cmd.Start())
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus output:\n%s", out.String())
		}
	})
	api := "http://" + promAddr + "/api/v1/"
	get := func(path string, v any) error {
		res, err := http.Get(api + path)
		if err != nil {
			return err
		}
		defer res.Body.Close()
		return json.NewDecoder(res.Body).Decode(v)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		var targets struct {
			Data struct {
				ActiveTargets []struct {
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"activeTargets"`
			} `json:"data"`
		}
		if err := get("targets", &targets); err == nil && len(targets.Data.ActiveTargets) == 1 && targets.Data.ActiveTargets[0].Health == "up" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus never saw apnsd up: %+v", targets)
		}
		time.Sleep(200 * time.Millisecond)
	}
	q := url.QueryEscape(`apnsd_notifications_total{app="app",env="sandbox",outcome="200"}`)
	for {
		var res struct {
			Status string `json:"status"`
			Data   struct {
				Result []struct {
					Value []any `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if err := get("query?query="+q, &res); err == nil && len(res.Data.Result) == 1 && res.Data.Result[0].Value[1] == "3" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("query %s: %+v", q, res)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The README's example queries are valid PromQL against these series;
	// the expiry one finds the sandbox certificate (the harness's expire
	// within a year, so test "< 400 days" for a non-empty answer).
	for expr, wantSeries := range map[string]bool{
		`sum by (app) (rate(apnsd_notifications_total{outcome="200"}[5m]))`:                                                      false,
		`sum by (app) (rate(apnsd_notifications_total{outcome="410"}[1h])) / sum by (app) (rate(apnsd_notifications_total[1h]))`: false,
		`apnsd_credential_expiry_timestamp_seconds - time() < 30 * 86400`:                                                        false,
		`apnsd_credential_expiry_timestamp_seconds - time() < 400 * 86400`:                                                       true,
		`histogram_quantile(0.99, sum by (le, app) (rate(apnsd_notification_duration_seconds_bucket[5m])))`:                      false,
		`apnsd_connections_up == 0`: false,
	} {
		var res struct {
			Status string `json:"status"`
			Error  string `json:"error"`
			Data   struct {
				Result []any `json:"result"`
			} `json:"data"`
		}
		if err := get("query?query="+url.QueryEscape(expr), &res); err != nil || res.Status != "success" {
			t.Errorf("%s: %v %s %s", expr, err, res.Status, res.Error)
		} else if wantSeries && len(res.Data.Result) == 0 {
			t.Errorf("%s: no series", expr)
		}
	}
}
