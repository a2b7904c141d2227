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

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/apnsd/apnsd/internal/apns"
	"github.com/apnsd/apnsd/internal/config"
	"github.com/apnsd/apnsd/internal/defaults"
	"github.com/apnsd/apnsd/internal/ipc"
)

// metrics is the Prometheus side of the daemon ([metrics] in the config).
// It is nil when no [metrics] listen address is configured, and every hook
// below is a no-op on a nil *metrics, so that the send path pays nothing.
//
// Label values are bounded: app and env come from the configuration,
// outcome from APNs' HTTP status or apnsd's error codes (ipc.Code*), code
// from apnsd's error codes. Tokens, reasons' free text and apns-ids are
// never labels.
type metrics struct {
	reg *prometheus.Registry

	notifications *prometheus.CounterVec   // app, env, outcome
	refused       *prometheus.CounterVec   // code
	latency       *prometheus.HistogramVec // app, env: acceptance to answer
	roundTrip     *prometheus.HistogramVec // app, env: one APNs request
	retries       *prometheus.CounterVec   // app, env
	reloads       *prometheus.CounterVec   // kind, result
	channelOps    *prometheus.CounterVec   // app, env, op, outcome

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
	m := &metrics{reg: prometheus.NewRegistry()}
	m.notifications = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "apnsd_notifications_total",
		Help: "Notifications answered, by app, environment and outcome: APNs' HTTP status (\"200\", \"410\", ...) or apnsd's error code when APNs did not answer (timeout, unavailable, shutting_down, ...).",
	}, []string{"app", "env", "outcome"})
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "apnsd_refused_total",
		Help: "Sends refused before acceptance (nothing was sent), by apnsd error code (queue_full, unknown_app, bad_request, ...).",
	}, []string{"code"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "apnsd_notification_duration_seconds",
		Help:    "Time from acceptance of a notification to its answer (retries included).",
		Buckets: latencyBuckets,
	}, []string{"app", "env"})
	m.roundTrip = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "apnsd_apns_request_duration_seconds",
		Help:    "Round trip of one request to APNs that APNs answered (each retry counts on its own).",
		Buckets: roundTripBuckets,
	}, []string{"app", "env"})
	m.retries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "apnsd_retries_total",
		Help: "Extra attempts made under the retry policy.",
	}, []string{"app", "env"})
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "apnsd_reloads_total",
		Help: "Reloads by kind (config: the whole file; credential: one environment's certificate or token key that changed) and result (ok, failed).",
	}, []string{"kind", "result"})
	m.channelOps = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "apnsd_channel_requests_total",
		Help: "Broadcast channel management requests, by op (create, get, list, delete) and outcome (APNs' HTTP status or apnsd's error code).",
	}, []string{"app", "env", "op", "outcome"})
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "apnsd_build_info", Help: "Always 1; the version label is apnsd's version.",
	}, []string{"version"})
	buildInfo.WithLabelValues(defaults.Version).Set(1)
	m.reg.MustRegister(m.notifications, m.refused, m.latency, m.roundTrip, m.retries, m.reloads, m.channelOps, buildInfo,
		&stateCollector{d: d},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

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
	m.notifications.WithLabelValues(app, env, outcome(r)).Inc()
	m.latency.WithLabelValues(app, env).Observe(time.Since(since).Seconds())
}

// apnsAnswered records the round trip of one APNs request that got an
// answer (res non-nil), started at start.
func (m *metrics) apnsAnswered(es *envSender, res *apns.Response, start time.Time) {
	if m == nil || res == nil {
		return
	}
	m.roundTrip.WithLabelValues(es.app.cfg.Name, es.cfg.Name).Observe(time.Since(start).Seconds())
}

// retried counts one extra attempt.
func (m *metrics) retried(es *envSender) {
	if m == nil {
		return
	}
	m.retries.WithLabelValues(es.app.cfg.Name, es.cfg.Name).Inc()
}

// refusedSend counts a send refused before acceptance.
func (m *metrics) refusedSend(e *ipc.Error) {
	if m == nil || e == nil {
		return
	}
	m.refused.WithLabelValues(e.Code).Inc()
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
	m.reloads.WithLabelValues(kind, result).Inc()
}

// channelOp counts one channel management request.
func (m *metrics) channelOp(es *envSender, op, outcome string) {
	if m == nil {
		return
	}
	m.channelOps.WithLabelValues(es.app.cfg.Name, es.cfg.Name, op, outcome).Inc()
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
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn), ErrorHandling: promhttp.ContinueOnError,
	}))
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
	descQueueDepth = prometheus.NewDesc("apnsd_queue_depth", "Notifications accepted and not yet sent to APNs.", nil, nil)
	descInFlight   = prometheus.NewDesc("apnsd_in_flight", "Notifications sent to APNs, answer pending.", nil, nil)
	descQueueCap   = prometheus.NewDesc("apnsd_queue_capacity", "queue_size: notifications accepted but not answered, at most.", nil, nil)
	descConnsUp    = prometheus.NewDesc("apnsd_connections_up", "HTTP/2 connections to APNs up and taking requests.", []string{"app", "env"}, nil)
	descConnsWant  = prometheus.NewDesc("apnsd_connections_target", "HTTP/2 connections to APNs configured (connections).", []string{"app", "env"}, nil)
	descReconnects = prometheus.NewDesc("apnsd_reconnects_total", "Connection attempts to APNs beyond the first one per configured connection (since the environment's client was built: a config reload that changes the app starts it again).", []string{"app", "env"}, nil)
	descExpiry     = prometheus.NewDesc("apnsd_credential_expiry_timestamp_seconds", "When the environment's push certificate expires (not_after), in seconds since 1970. Token keys do not expire and have no series.", []string{"app", "env"}, nil)
	descTokenMints = prometheus.NewDesc("apnsd_token_refreshes_total", "Provider tokens (JWT) signed, by app and key id (the key of an environment, or the app's key shared by its environments).", []string{"app", "key_id"}, nil)
	descCredLoaded = prometheus.NewDesc("apnsd_credential_loaded_timestamp_seconds", "When the environment's current credential was loaded.", []string{"app", "env"}, nil)
	descReloadErr  = prometheus.NewDesc("apnsd_credential_reload_failing", "1 while the environment's last credential reload failed (the previous credential stays in use), else 0.", []string{"app", "env"}, nil)
	descChannels   = prometheus.NewDesc("apnsd_broadcast_channels", "Broadcast channels of the app and environment, as of the last channel_list or create/delete through apnsd (no series before the first).", []string{"app", "env"}, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueueDepth, descInFlight, descQueueCap, descConnsUp, descConnsWant, descReconnects, descExpiry, descTokenMints, descCredLoaded, descReloadErr, descChannels} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.d.current()
	inFlight := 0
	sources := map[*apns.TokenSource]bool{}
	for _, es := range st.senders() {
		app, env := es.app.cfg.Name, es.cfg.Name
		cs := es.client.Status()
		inFlight += cs.InFlight
		ch <- prometheus.MustNewConstMetric(descConnsUp, prometheus.GaugeValue, float64(cs.Connections), app, env)
		ch <- prometheus.MustNewConstMetric(descConnsWant, prometheus.GaugeValue, float64(cs.Target), app, env)
		ch <- prometheus.MustNewConstMetric(descReconnects, prometheus.CounterValue, float64(max(int64(cs.Dials)-int64(cs.Target), 0)), app, env)
		if cert := es.cred.cur.Load(); cert != nil {
			ch <- prometheus.MustNewConstMetric(descExpiry, prometheus.GaugeValue, float64(cert.NotAfter.Unix()), app, env)
			ch <- prometheus.MustNewConstMetric(descCredLoaded, prometheus.GaugeValue, float64(cert.LoadedAt.Unix()), app, env)
		}
		if es.token != nil {
			ti := es.token.Info()
			ch <- prometheus.MustNewConstMetric(descCredLoaded, prometheus.GaugeValue, float64(ti.KeyLoadedAt.Unix()), app, env)
			if !sources[es.token] {
				sources[es.token] = true
				ch <- prometheus.MustNewConstMetric(descTokenMints, prometheus.CounterValue, float64(ti.Mints), app, ti.KeyID)
			}
		}
		es.cred.mu.Lock()
		failing := 0.0
		if es.cred.lastErr != nil {
			failing = 1
		}
		es.cred.mu.Unlock()
		ch <- prometheus.MustNewConstMetric(descReloadErr, prometheus.GaugeValue, failing, app, env)
		if n, ok := es.channelCount(); ok {
			ch <- prometheus.MustNewConstMetric(descChannels, prometheus.GaugeValue, float64(n), app, env)
		}
	}
	pending := int(c.d.pending.Load())
	ch <- prometheus.MustNewConstMetric(descQueueDepth, prometheus.GaugeValue, float64(max(pending-inFlight, 0)))
	ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(inFlight))
	ch <- prometheus.MustNewConstMetric(descQueueCap, prometheus.GaugeValue, float64(st.cfg.QueueSize))
}
