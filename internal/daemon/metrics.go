package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/apnsd/apnsd/internal/apns"
	"github.com/apnsd/apnsd/internal/config"
	"github.com/apnsd/apnsd/internal/defaults"
	"github.com/apnsd/apnsd/internal/ipc"
	"github.com/apnsd/apnsd/internal/prom"
)

// metrics is the Prometheus side of the daemon ([metrics] in the config).
// It is nil when no [metrics] listen address is configured, and every hook
// below is a no-op on a nil *metrics, so that the send path pays nothing.
//
// Label values are bounded: app and env come from the configuration,
// outcome from APNs' HTTP status or apnsd's error codes (ipc.Code*), code
// from apnsd's error codes. Tokens, reasons' free text and apns-ids are
// never labels. The exposition is internal/prom's (not client_golang's:
// see that package's doc).
type metrics struct {
	reg *prom.Registry

	notifications *prom.CounterVec   // app, env, outcome
	refused       *prom.CounterVec   // code
	latency       *prom.HistogramVec // app, env: acceptance to answer
	roundTrip     *prom.HistogramVec // app, env: one APNs request
	retries       *prom.CounterVec   // app, env
	reloads       *prom.CounterVec   // kind, result
	channelOps    *prom.CounterVec   // app, env, op, outcome

	srv *http.Server
	ln  net.Listener
}

// Buckets, in seconds. Acceptance to answer spans a loopback round trip
// (sub-millisecond) to request_timeout (30s by default); one APNs request
// is usually 1-300 ms.
var (
	latencyBuckets   = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	roundTripBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
)

func newMetrics(d *Daemon) *metrics {
	r := prom.NewRegistry()
	m := &metrics{reg: r}
	m.notifications = r.NewCounterVec("apnsd_notifications_total",
		"Notifications answered, by app, environment and outcome: APNs' HTTP status (\"200\", \"410\", ...) or apnsd's error code when APNs did not answer (timeout, unavailable, shutting_down, ...).",
		"app", "env", "outcome")
	m.refused = r.NewCounterVec("apnsd_refused_total",
		"Sends refused before acceptance (nothing was sent), by apnsd error code (queue_full, unknown_app, bad_request, ...).",
		"code")
	m.latency = r.NewHistogramVec("apnsd_notification_duration_seconds",
		"Time from acceptance of a notification to its answer (retries included).",
		latencyBuckets, "app", "env")
	m.roundTrip = r.NewHistogramVec("apnsd_apns_request_duration_seconds",
		"Round trip of one request to APNs that APNs answered (each retry counts on its own).",
		roundTripBuckets, "app", "env")
	m.retries = r.NewCounterVec("apnsd_retries_total", "Extra attempts made under the retry policy.", "app", "env")
	m.reloads = r.NewCounterVec("apnsd_reloads_total",
		"Reloads by kind (config: the whole file; credential: one environment's certificate or token key that changed) and result (ok, failed).",
		"kind", "result")
	m.channelOps = r.NewCounterVec("apnsd_channel_requests_total",
		"Broadcast channel management requests, by op (create, get, list, delete) and outcome (APNs' HTTP status or apnsd's error code).",
		"app", "env", "op", "outcome")
	r.MustRegister(buildInfo{}, &stateCollector{d: d}, prom.GoCollector{}, prom.ProcessCollector{Start: time.Now()})
	return m
}

var descBuildInfo = prom.NewDesc("apnsd_build_info", "Always 1; the version label is apnsd's version.", prom.Gauge, "version")

// buildInfo reports apnsd_build_info.
type buildInfo struct{}

func (buildInfo) Describe() []*prom.Desc { return []*prom.Desc{descBuildInfo} }
func (buildInfo) Collect(emit prom.Emit) { emit(descBuildInfo, 1, defaults.Version) }

// outcome is the outcome label of an answer.
func outcome(r *ipc.Response) string {
	if r.Error != "" {
		return r.Error
	}
	return strconv.Itoa(r.Status)
}

// answered records one notification's answer r for es, accepted at since.
func (m *metrics) answered(es *envSender, r *ipc.Response, since time.Time) {
	if m == nil {
		return
	}
	app, env := es.app.cfg.Name, es.cfg.Name
	m.notifications.Inc(app, env, outcome(r))
	m.latency.Observe(time.Since(since).Seconds(), app, env)
}

// apnsAnswered records the round trip of one APNs request that got an
// answer (res non-nil), started at start.
func (m *metrics) apnsAnswered(es *envSender, res *apns.Response, start time.Time) {
	if m == nil || res == nil {
		return
	}
	m.roundTrip.Observe(time.Since(start).Seconds(), es.app.cfg.Name, es.cfg.Name)
}

// retried counts one extra attempt.
func (m *metrics) retried(es *envSender) {
	if m == nil {
		return
	}
	m.retries.Inc(es.app.cfg.Name, es.cfg.Name)
}

// refusedSend counts a send refused before acceptance.
func (m *metrics) refusedSend(e *ipc.Error) {
	if m == nil || e == nil {
		return
	}
	m.refused.Inc(e.Code)
}

// reloaded counts a reload of kind "config" or "credential".
func (m *metrics) reloaded(kind string, err error) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "failed"
	}
	m.reloads.Inc(kind, result)
}

// channelOp counts one channel management request.
func (m *metrics) channelOp(es *envSender, op, outcome string) {
	if m == nil {
		return
	}
	m.channelOps.Inc(es.app.cfg.Name, es.cfg.Name, op, outcome)
}

// serve starts the /metrics endpoint on cfg.Listen.
func (m *metrics) serve(cfg config.MetricsConfig, log *slog.Logger) error {
	var ln net.Listener
	var err error
	if path, ok := cfg.UnixPath(); ok {
		if fi, statErr := os.Lstat(path); statErr == nil && fi.Mode()&os.ModeSocket != 0 {
			os.Remove(path) // a stale socket of an earlier run
		}
		ln, err = net.Listen("unix", path)
	} else {
		ln, err = net.Listen("tcp", cfg.Listen)
	}
	if err != nil {
		return fmt.Errorf("metrics.listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.reg.Handler())
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "apnsd: metrics are at /metrics")
	})
	m.ln = ln
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	go func() {
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics endpoint stopped", "err", err)
		}
	}()
	log.Info("serving Prometheus metrics", "listen", cfg.Listen, "path", "/metrics")
	return nil
}

// close stops the endpoint (and unlinks its Unix socket).
func (m *metrics) close() {
	if m == nil || m.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	m.srv.Shutdown(ctx)
}

// stateCollector reports, at scrape time, what the daemon's state says now:
// queue depth and in flight, connections, credential expiry, token mints,
// reconnects and channel counts. It reads one snapshot of the state.
type stateCollector struct{ d *Daemon }

var (
	descQueueDepth = prom.NewDesc("apnsd_queue_depth", "Notifications accepted and not yet sent to APNs.", prom.Gauge)
	descInFlight   = prom.NewDesc("apnsd_in_flight", "Notifications sent to APNs, answer pending.", prom.Gauge)
	descQueueCap   = prom.NewDesc("apnsd_queue_capacity", "queue_size: notifications accepted but not answered, at most.", prom.Gauge)
	descConnsUp    = prom.NewDesc("apnsd_connections_up", "HTTP/2 connections to APNs up and taking requests.", prom.Gauge, "app", "env")
	descConnsWant  = prom.NewDesc("apnsd_connections_target", "HTTP/2 connections to APNs configured (connections).", prom.Gauge, "app", "env")
	descReconnects = prom.NewDesc("apnsd_reconnects_total", "Connection attempts to APNs beyond the first one per configured connection (since the environment's client was built: a config reload that changes the app starts it again).", prom.Counter, "app", "env")
	descExpiry     = prom.NewDesc("apnsd_credential_expiry_timestamp_seconds", "When the environment's push certificate expires (not_after), in seconds since 1970. Token keys do not expire and have no series.", prom.Gauge, "app", "env")
	descTokenMints = prom.NewDesc("apnsd_token_refreshes_total", "Provider tokens (JWT) signed, by app and key id (the key of an environment, or the app's key shared by its environments).", prom.Counter, "app", "key_id")
	descCredLoaded = prom.NewDesc("apnsd_credential_loaded_timestamp_seconds", "When the environment's current credential was loaded.", prom.Gauge, "app", "env")
	descReloadErr  = prom.NewDesc("apnsd_credential_reload_failing", "1 while the environment's last credential reload failed (the previous credential stays in use), else 0.", prom.Gauge, "app", "env")
	descChannels   = prom.NewDesc("apnsd_broadcast_channels", "Broadcast channels of the app and environment, as of the last channel_list or create/delete through apnsd (no series before the first).", prom.Gauge, "app", "env")
)

func (c *stateCollector) Describe() []*prom.Desc {
	return []*prom.Desc{descQueueDepth, descInFlight, descQueueCap, descConnsUp, descConnsWant, descReconnects, descExpiry, descTokenMints, descCredLoaded, descReloadErr, descChannels}
}

func (c *stateCollector) Collect(emit prom.Emit) {
	st := c.d.current()
	inFlight := 0
	sources := map[*apns.TokenSource]bool{}
	for _, es := range st.senders() {
		app, env := es.app.cfg.Name, es.cfg.Name
		cs := es.client.Status()
		inFlight += cs.InFlight
		emit(descConnsUp, float64(cs.Connections), app, env)
		emit(descConnsWant, float64(cs.Target), app, env)
		emit(descReconnects, float64(max(int64(cs.Dials)-int64(cs.Target), 0)), app, env)
		if cert := es.cred.cur.Load(); cert != nil {
			emit(descExpiry, float64(cert.NotAfter.Unix()), app, env)
			emit(descCredLoaded, float64(cert.LoadedAt.Unix()), app, env)
		}
		if es.token != nil {
			ti := es.token.Info()
			emit(descCredLoaded, float64(ti.KeyLoadedAt.Unix()), app, env)
			if !sources[es.token] {
				sources[es.token] = true
				emit(descTokenMints, float64(ti.Mints), app, ti.KeyID)
			}
		}
		es.cred.mu.Lock()
		failing := 0.0
		if es.cred.lastErr != nil {
			failing = 1
		}
		es.cred.mu.Unlock()
		emit(descReloadErr, failing, app, env)
		if n, ok := es.channelCount(); ok {
			emit(descChannels, float64(n), app, env)
		}
	}
	pending := int(c.d.pending.Load())
	emit(descQueueDepth, float64(max(pending-inFlight, 0)))
	emit(descInFlight, float64(inFlight))
	emit(descQueueCap, float64(st.cfg.QueueSize))
}
