package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apnsd/apnsd/internal/apns"
	"github.com/apnsd/apnsd/internal/config"
	"github.com/apnsd/apnsd/internal/ipc"
)

// topicSuffix is the suffix Apple expects on the bundle id for push types
// that have their own topic.
var topicSuffix = map[string]string{
	apns.PushTypeVoIP:         ".voip",
	apns.PushTypeComplication: ".complication",
	apns.PushTypeFileProvider: ".pushkit.fileprovider",
	apns.PushTypeLocation:     ".location-query",
	apns.PushTypeLiveActivity: ".push-type.liveactivity",
	apns.PushTypePushToTalk:   ".voip-ptt",
}

// credential holds the certificate an environment currently presents. The
// TLS stack reads it through GetClientCertificate on every new connection,
// so a swap needs no new client.
type credential struct {
	cur atomic.Pointer[apns.Certificate]

	mu sync.Mutex
	// mu guards the fields that follow.
	lastErr   error
	lastErrAt time.Time
}

func (c *credential) getClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	cert := c.cur.Load()
	if cert == nil {
		return nil, errors.New("no client certificate loaded")
	}
	return &cert.TLS, nil
}

// envSender sends one app's notifications to one APNs environment.
type envSender struct {
	app    *appState
	cfg    *config.EnvConfig
	client *apns.Client
	cred   *credential
	sent   atomic.Uint64
	failed atomic.Uint64
}

type appState struct {
	cfg  *config.AppConfig
	envs map[string]*envSender
}

// backend is the daemon's ipc.Backend: it owns the apps, their clients, the
// queue bound and the counters, and answers every accepted notification
// exactly once.
type backend struct {
	log            *slog.Logger
	cfg            *config.Config
	requestTimeout time.Duration
	queueCap       int64
	started        time.Time
	socket         string
	// reload is called by the "reload" op and SIGHUP.
	reload func(ctx context.Context) (*ipc.ReloadReport, error)

	apps atomic.Pointer[map[string]*appState]

	pending atomic.Int64 // accepted, not yet answered
	sent    atomic.Uint64
	failed  atomic.Uint64
	refused atomic.Uint64

	mu sync.Mutex
	// mu guards shutting and the Add side of wg.
	shutting bool
	wg       sync.WaitGroup // one per accepted notification

	// drainCtx is cancelled when the shutdown deadline passes: every
	// notification still waiting is then answered shutting_down.
	drainCtx    context.Context
	drainCancel context.CancelFunc
}

func newBackend(cfg *config.Config, log *slog.Logger) *backend {
	b := &backend{
		log:            log,
		cfg:            cfg,
		requestTimeout: cfg.RequestTimeout,
		queueCap:       int64(cfg.QueueSize),
		started:        time.Now(),
	}
	b.drainCtx, b.drainCancel = context.WithCancel(context.Background())
	empty := map[string]*appState{}
	b.apps.Store(&empty)
	return b
}

// buildApps loads every credential and makes (but does not start) a client
// per app and environment.
func buildApps(cfg *config.Config, log *slog.Logger, now time.Time) (map[string]*appState, error) {
	apps := map[string]*appState{}
	var errs []error
	for i := range cfg.Apps {
		ac := &cfg.Apps[i]
		st := &appState{cfg: ac, envs: map[string]*envSender{}}
		for _, ec := range []*config.EnvConfig{ac.Sandbox, ac.Production} {
			if ec == nil {
				continue
			}
			es, err := newEnvSender(st, ec, log, now)
			if err != nil {
				errs = append(errs, fmt.Errorf("app %q %s: %w", ac.Name, ec.Name, err))
				continue
			}
			st.envs[ec.Name] = es
		}
		apps[ac.Name] = st
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return apps, nil
}

func newEnvSender(app *appState, ec *config.EnvConfig, log *slog.Logger, now time.Time) (*envSender, error) {
	if ec.AuthKind() != "certificate" {
		return nil, fmt.Errorf("token (.p8) authentication is not supported yet; configure cert_file/key_file or p12_file")
	}
	cert, err := apns.LoadCertificate(ec.Cert, now)
	if err != nil {
		return nil, err
	}
	for _, w := range apns.KeyFileWarnings(ec.Cert) {
		log.Warn(w, "app", app.cfg.Name, "env", ec.Name)
	}
	if !cert.Covers(app.cfg.Topic) {
		log.Warn("certificate does not list the app's topic; APNs will likely answer TopicDisallowed",
			"app", app.cfg.Name, "env", ec.Name, "topic", app.cfg.Topic, "cert_topics", strings.Join(cert.Topics, ","))
	}
	roots, err := rootCAs(ec.CAFile)
	if err != nil {
		return nil, err
	}
	cred := &credential{}
	cred.cur.Store(cert)
	client, err := apns.NewClient(apns.ClientOptions{
		Endpoint:             ec.Endpoint,
		RootCAs:              roots,
		GetClientCertificate: cred.getClientCertificate,
		Connections:          ec.Connections,
		Logger:               log.With("component", "apns", "app", app.cfg.Name, "env", ec.Name),
	})
	if err != nil {
		return nil, err
	}
	return &envSender{app: app, cfg: ec, client: client, cred: cred}, nil
}

// rootCAs is the system pool plus the PEM certificates in caFile, if any.
func rootCAs(caFile string) (*x509.CertPool, error) {
	if caFile == "" {
		return nil, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("ca_file: %w", err)
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca_file %s: no PEM certificate found", caFile)
	}
	return pool, nil
}

func (b *backend) appMap() map[string]*appState { return *b.apps.Load() }

// Submit implements ipc.Backend.
func (b *backend) Submit(sr *ipc.SendRequest) (<-chan *ipc.Response, *ipc.Error) {
	apps := b.appMap()
	app, e := pickApp(apps, sr.App)
	if e != nil {
		b.refused.Add(1)
		return nil, e
	}
	envName := sr.Env
	if envName == "" {
		envName = app.cfg.DefaultEnv
	}
	es := app.envs[envName]
	if es == nil {
		b.refused.Add(1)
		return nil, ipc.Errorf(ipc.CodeBadRequest, false, "app %q has no %s environment configured", app.cfg.Name, envName)
	}
	n := sr.Notification
	if n.Topic == "" {
		n.Topic = app.cfg.Topic + topicSuffix[n.PushType]
	}

	b.mu.Lock()
	if b.shutting {
		b.mu.Unlock()
		b.refused.Add(1)
		return nil, ipc.Errorf(ipc.CodeShuttingDown, true, "apnsd is shutting down; send again once it is back")
	}
	if b.pending.Load() >= b.queueCap {
		b.mu.Unlock()
		b.refused.Add(1)
		return nil, ipc.Errorf(ipc.CodeQueueFull, true, "queue is full (%d notifications waiting); retry later", b.queueCap)
	}
	b.pending.Add(1)
	b.wg.Add(1)
	b.mu.Unlock()

	ch := make(chan *ipc.Response, 1)
	go b.deliver(es, &n, ch)
	return ch, nil
}

func pickApp(apps map[string]*appState, name string) (*appState, *ipc.Error) {
	if name == "" {
		if len(apps) == 1 {
			for _, a := range apps {
				return a, nil
			}
		}
		return nil, ipc.Errorf(ipc.CodeUnknownApp, false, "\"app\" is required: %d apps are configured (%s)", len(apps), strings.Join(appNames(apps), ", "))
	}
	app := apps[name]
	if app == nil {
		return nil, ipc.Errorf(ipc.CodeUnknownApp, false, "no app named %q is configured (configured: %s)", name, strings.Join(appNames(apps), ", "))
	}
	return app, nil
}

func appNames(apps map[string]*appState) []string {
	names := make([]string, 0, len(apps))
	for n := range apps {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// deliver sends n and puts exactly one answer on ch.
func (b *backend) deliver(es *envSender, n *apns.Notification, ch chan<- *ipc.Response) {
	defer b.wg.Done()
	defer b.pending.Add(-1)
	ctx, cancel := context.WithTimeout(b.drainCtx, b.requestTimeout)
	defer cancel()
	res, err := es.client.Send(ctx, n)
	r := b.answer(es, n, res, err)
	ch <- r
}

func (b *backend) answer(es *envSender, n *apns.Notification, res *apns.Response, err error) *ipc.Response {
	log := b.log.With("app", es.app.cfg.Name, "env", es.cfg.Name, "token", TruncateToken(n.DeviceToken))
	if err == nil {
		r := &ipc.Response{OK: res.OK(), Status: res.StatusCode, Reason: res.Reason, ApnsID: res.ApnsID}
		if res.StatusCode == 410 {
			r.Timestamp = res.Timestamp
		}
		if r.OK {
			b.sent.Add(1)
			es.sent.Add(1)
		} else {
			retry := apns.Retryable(res.StatusCode, res.Reason)
			r.Retryable = &retry
			b.failed.Add(1)
			es.failed.Add(1)
			log.Info("APNs refused notification", "status", res.StatusCode, "reason", res.Reason, "apns_id", res.ApnsID)
		}
		return r
	}
	b.failed.Add(1)
	es.failed.Add(1)
	var e *ipc.Error
	var ce *apns.ConnError
	switch {
	case b.drainCtx.Err() != nil:
		e = ipc.Errorf(ipc.CodeShuttingDown, true, "apnsd shut down before APNs answered; the notification may or may not have been delivered")
	case errors.Is(err, apns.ErrUnavailable):
		e = ipc.Errorf(ipc.CodeUnavailable, true, "%v", err)
	case errors.Is(err, context.DeadlineExceeded):
		e = ipc.Errorf(ipc.CodeTimeout, true, "no answer from APNs within %s", b.requestTimeout)
	case errors.As(err, &ce):
		e = ipc.Errorf(ipc.CodeUnavailable, true, "%v (APNs may or may not have received it)", err)
	case errors.Is(err, apns.ErrClosed):
		e = ipc.Errorf(ipc.CodeShuttingDown, true, "apnsd is shutting down")
	default:
		e = ipc.Errorf(ipc.CodeInternal, false, "%v", err)
	}
	log.Warn("notification not delivered", "error", e.Code, "detail", e.Message)
	return ipc.ErrorResponse(e)
}

// TruncateToken shortens a device token for logs: enough to recognise it,
// not enough to use it.
func TruncateToken(t string) string {
	if len(t) <= 12 {
		return t
	}
	return t[:8] + "…" + t[len(t)-4:]
}

// beginShutdown refuses new notifications from now on.
func (b *backend) beginShutdown() {
	b.mu.Lock()
	b.shutting = true
	b.mu.Unlock()
}

// drain waits for every accepted notification to be answered. When ctx
// ends first, the ones still waiting are answered shutting_down.
func (b *backend) drain(ctx context.Context) (abandoned int64) {
	b.beginShutdown()
	done := make(chan struct{})
	go func() { b.wg.Wait(); close(done) }()
	select {
	case <-done:
		return 0
	case <-ctx.Done():
		abandoned = b.pending.Load()
		b.drainCancel()
		<-done
		return abandoned
	}
}

// Status implements ipc.Backend.
func (b *backend) Status() *ipc.StatusReport {
	now := time.Now()
	rep := &ipc.StatusReport{
		Started:       b.started,
		UptimeSeconds: int64(now.Sub(b.started).Seconds()),
		Socket:        b.socket,
		Config:        b.cfg.Path,
	}
	inFlight := 0
	apps := b.appMap()
	for _, name := range appNames(apps) {
		app := apps[name]
		as := ipc.AppStatus{Name: name, Topic: app.cfg.Topic, DefaultEnv: app.cfg.DefaultEnv}
		for _, envName := range []string{apns.Sandbox, apns.Production} {
			es := app.envs[envName]
			if es == nil {
				continue
			}
			cs := es.client.Status()
			inFlight += cs.InFlight
			st := ipc.EnvStatus{
				Env: envName, Endpoint: cs.Endpoint, State: cs.State(),
				Connections: cs.Connections, Target: cs.Target, InFlight: cs.InFlight,
				LastConnErr: cs.LastError, Auth: es.cfg.AuthKind(),
				Sent: es.sent.Load(), Failed: es.failed.Load(),
				Files: es.cfg.Cert.Paths(),
			}
			if cert := es.cred.cur.Load(); cert != nil {
				st.CertSubject = cert.Subject
				st.NotAfter = cert.NotAfter
				days := int(cert.NotAfter.Sub(now).Hours() / 24)
				st.DaysLeft = &days
				st.LoadedAt = cert.LoadedAt
			}
			es.cred.mu.Lock()
			if es.cred.lastErr != nil {
				st.LastReloadError = es.cred.lastErr.Error()
				st.LastReloadErrorAt = es.cred.lastErrAt
			}
			es.cred.mu.Unlock()
			as.Envs = append(as.Envs, st)
		}
		rep.Apps = append(rep.Apps, as)
	}
	pending := int(b.pending.Load())
	rep.Queue = ipc.QueueStatus{
		Depth:    max(pending-inFlight, 0),
		InFlight: inFlight,
		Capacity: int(b.queueCap),
		Sent:     b.sent.Load(),
		Failed:   b.failed.Load(),
		Refused:  b.refused.Load(),
	}
	return rep
}

// Reload implements ipc.Backend.
func (b *backend) Reload(ctx context.Context) (*ipc.ReloadReport, error) {
	if b.reload == nil {
		return nil, ipc.Errorf(ipc.CodeReloadFailed, false, "reload is not available")
	}
	return b.reload(ctx)
}

// reloadCredentials re-reads every credential file. A credential that
// loads, validates and differs from the current one is swapped in and the
// environment's connections are replaced (requests in flight finish on the
// old ones). One that fails keeps the old credential in use.
func (b *backend) reloadCredentials(now time.Time) *ipc.ReloadReport {
	rep := &ipc.ReloadReport{}
	apps := b.appMap()
	for _, name := range appNames(apps) {
		app := apps[name]
		for _, envName := range []string{apns.Sandbox, apns.Production} {
			es := app.envs[envName]
			if es == nil {
				continue
			}
			where := name + "/" + envName
			changed, err := es.reloadCredential(now)
			switch {
			case err != nil:
				rep.Errors = append(rep.Errors, where+": "+err.Error())
				b.log.Error("credential reload failed; keeping the current credential", "app", name, "env", envName, "err", err)
			case changed:
				cert := es.cred.cur.Load()
				rep.Reloaded = append(rep.Reloaded, fmt.Sprintf("%s: new certificate %q, not after %s", where, cert.Subject, cert.NotAfter.Format(time.DateOnly)))
				b.log.Info("credential reloaded; moving to new connections", "app", name, "env", envName, "subject", cert.Subject, "not_after", cert.NotAfter)
			}
		}
	}
	return rep
}

func (es *envSender) reloadCredential(now time.Time) (changed bool, err error) {
	cert, err := apns.LoadCertificate(es.cfg.Cert, now)
	es.cred.mu.Lock()
	defer es.cred.mu.Unlock()
	if err != nil {
		es.cred.lastErr = err
		es.cred.lastErrAt = now
		return false, err
	}
	es.cred.lastErr = nil
	old := es.cred.cur.Load()
	if old != nil && old.Fingerprint == cert.Fingerprint {
		return false, nil
	}
	es.cred.cur.Store(cert)
	es.client.Rotate()
	return true, nil
}
