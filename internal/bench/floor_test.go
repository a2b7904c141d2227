package bench

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2/hpack"
)

// init lets this test binary serve as Floor's socket-floor server, as
// TestMain (compare_test.go) lets it serve as the load generator: the
// parent runs os.Executable() with $APNSBENCH_FLOORSERVER set.
func init() {
	if os.Getenv(FloorServerEnv) != "" {
		os.Exit(FloorServerMain())
	}
}

// TestFloorSmoke runs the whole floor measurement small: both socket-floor
// servers (separate processes) driven by the load-generator process, both
// HTTP/2-floor variants against nghttpd, and the apnsd binary for
// reference. Every row must get all its answers 200 and report its
// figures; nothing is judged on speed.
func TestFloorSmoke(t *testing.T) {
	if _, err := os.Stat("/usr/sbin/nghttpd"); err != nil {
		t.Fatalf("nghttpd: %v (scripts/deps.sh installs nghttp2-server)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	apnsd := filepath.Join(t.TempDir(), "apnsd")
	if out, err := runGo(ctx, "build", "-o", apnsd, "github.com/apnsd/apnsd/cmd/apnsd"); err != nil {
		t.Fatalf("go build apnsd: %v: %s", err, out)
	}
	var progress bytes.Buffer
	// Enough that the load generator's CPU is several of /proc's 10 ms ticks.
	const n = 20000
	o := FloorOptions{Nghttpd: "/usr/sbin/nghttpd", Apnsd: apnsd, Clients: 2, Pipeline: 16, InFlight: 64, N: n, Warmup: 64, LatencyN: 300, Out: &progress}
	rep, err := Floor(ctx, o)
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	names := []string{FloorSocketOne, FloorSocketSplit, FloorH2Naive, FloorH2Tuned, FloorApnsd}
	if rep.Lat.Answered != 300 || rep.Lat.P50 <= 0 {
		t.Errorf("one in flight: answered %d, p50 %s; want 300 answered", rep.Lat.Answered, rep.Lat.P50)
	}
	if len(rep.Rows) != len(names) {
		t.Fatalf("%d rows, want %d", len(rep.Rows), len(names))
	}
	for i, p := range rep.Rows {
		if p.Name != names[i] {
			t.Errorf("row %d is %q, want %q", i, p.Name, names[i])
		}
		if p.Answered != n || p.Answers["200"] != n || p.Errors != 0 {
			t.Errorf("%s: answered %d (%v), want %d answered 200", p.Name, p.Answered, p.Answers, n)
		}
		if p.CPU < 0 || p.P50 <= 0 || p.P99 < p.P50 || p.Elapsed <= 0 {
			t.Errorf("%s: implausible figures: CPU %s, p50 %s, p99 %s, elapsed %s", p.Name, p.CPU, p.P50, p.P99, p.Elapsed)
		}
	}
	for _, name := range []string{FloorSocketOne, FloorSocketSplit, FloorApnsd} {
		if p := rep.Row(name); p.LoadgenCPU <= 0 {
			t.Errorf("%s: load generator CPU %s", name, p.LoadgenCPU)
		}
	}
	if rep.NProc <= 0 || rep.LoadStart == "" || rep.LoadEnd == "" {
		t.Errorf("machine context: nproc %d, load %q / %q", rep.NProc, rep.LoadStart, rep.LoadEnd)
	}
	var buf bytes.Buffer
	rep.Print(&buf)
	for _, s := range append(names, "combined floor estimate", "load average", "of 5µs") {
		if !strings.Contains(buf.String(), s) {
			t.Errorf("report lacks %q:\n%s", s, buf.String())
		}
	}
	t.Logf("\n%s", buf.String())
}

// TestFloorTunedHeaderBlock checks that the tuned variant's hand-made
// header blocks decode to the same fields as the naive variant's, in an
// order HTTP/2 allows (pseudo-header fields first), on the first request
// and on later ones, and that its per-request fields are never indexed.
func TestFloorTunedHeaderBlock(t *testing.T) {
	mk := func(tuned bool) *h2Floor {
		c := &h2Floor{tuned: tuned, authority: "127.0.0.1:443", path: "/3/device/" + Token, clen: "29"}
		c.enc = hpack.NewEncoder(&c.hbuf)
		if tuned {
			c.preEncode()
		}
		return c
	}
	naive, tuned := mk(false), mk(true)
	var got [2][]hpack.HeaderField
	decs := [2]*hpack.Decoder{}
	for i := range decs {
		decs[i] = hpack.NewDecoder(4096, func(f hpack.HeaderField) { got[i] = append(got[i], f) })
	}
	for k, id := range []string{"0c1d2e3f-0000-4000-8000-000000000001", "0c1d2e3f-0000-4000-8000-000000000002", "0c1d2e3f-0000-4000-8000-000000000003"} {
		got = [2][]hpack.HeaderField{}
		for i, c := range []*h2Floor{naive, tuned} {
			if _, err := decs[i].Write(c.headerBlock(id)); err != nil {
				t.Fatalf("request %d, tuned %v: %v", k, i == 1, err)
			}
			if err := decs[i].Close(); err != nil {
				t.Fatalf("request %d, tuned %v: %v", k, i == 1, err)
			}
		}
		if len(got[0]) != len(got[1]) {
			t.Fatalf("request %d: naive %v, tuned %v", k, got[0], got[1])
		}
		seen := map[string]string{}
		for _, f := range got[0] {
			seen[f.Name] = f.Value
		}
		regular := false
		for _, f := range got[1] {
			if seen[f.Name] != f.Value {
				t.Errorf("request %d: tuned sends %s = %q, naive %q", k, f.Name, f.Value, seen[f.Name])
			}
			if strings.HasPrefix(f.Name, ":") && regular {
				t.Errorf("request %d: pseudo-header %s after a regular field: %v", k, f.Name, got[1])
			}
			regular = regular || !strings.HasPrefix(f.Name, ":")
			if perRequest := f.Name == ":path" || f.Name == "apns-id" || f.Name == "content-length"; perRequest != f.Sensitive {
				t.Errorf("request %d: %s never-indexed %v", k, f.Name, f.Sensitive)
			}
		}
		if seen["apns-id"] != id {
			t.Errorf("request %d: apns-id %q, want %q", k, seen["apns-id"], id)
		}
	}
}

// TestFloorID checks the socket floor's id scan and answer shape.
func TestFloorID(t *testing.T) {
	for _, c := range []struct{ line, want string }{
		{`{"id":17,"token":"ab","payload":{}}` + "\n", `{"id":17,"ok":true,"status":200,"apns_id":"` + floorApnsID + `"}` + "\n"},
		{`{"token":"ab","id":"x-1"}` + "\n", `{"id":"x-1","ok":true,"status":200,"apns_id":"` + floorApnsID + `"}` + "\n"},
		{`{"token":"ab"}` + "\n", `{"ok":true,"status":200,"apns_id":"` + floorApnsID + `"}` + "\n"},
	} {
		if got := string(appendFloorAnswer(nil, floorID([]byte(c.line)))); got != c.want {
			t.Errorf("answer to %q = %q, want %q", c.line, got, c.want)
		}
	}
	if len(floorApnsID) != 36 {
		t.Errorf("floorApnsID has %d characters, want 36", len(floorApnsID))
	}
}
