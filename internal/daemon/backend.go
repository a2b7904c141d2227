package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
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
	// active counts notifications accepted for this sender and not yet
	// answered; a retired sender's client closes when it reaches zero.
	active sync.WaitGroup
	// watch is the file watcher's state for this sender's credential files.
	watch watchState
	// token is set for token auth (the app's shared source); tokenFP is
	// the fingerprint of the key this sender's connections were opened with.
	token   *apns.TokenSource
	tokenFP string

	// undelivered rate-limits the "not delivered" warning: during an
	// outage every notification fails the same way, and one line per
	// notification would flood the journal.
	undeliveredMu    sync.Mutex
	undeliveredSince time.Time // start of the current summary period
	undeliveredN     int       // failures not yet reported in it
}

// undeliveredEvery is how often, at most, an environment logs a warning for
// notifications it could not deliver; the ones in between are counted in
// the next warning (and logged at debug level).
const undeliveredEvery = 10 * time.Second

func (es *envSender) logUndelivered(log *slog.Logger, e *ipc.Error) {
	es.undeliveredMu.Lock()
	now := time.Now()
	es.undeliveredN++
	if !es.undeliveredSince.IsZero() && now.Sub(es.undeliveredSince) < undeliveredEvery {
		es.undeliveredMu.Unlock()
		log.Debug("notification not delivered", "error", e.Code, "detail", e.Message)
		return
	}
	n := es.undeliveredN
	es.undeliveredSince, es.undeliveredN = now, 0
	es.undeliveredMu.Unlock()
	log.Warn("notification not delivered", "error", e.Code, "detail", e.Message, "count_since_last_warning", n)
}

type appState struct {
	cfg  *config.AppConfig
	envs map[string]*envSender
	// token is the app's token source, shared by every connection of both
	// environments that use token auth; nil without [apps.token].
	token *apns.TokenSource
	// clockWarned is the last token an "expired but too young" error was
	// logged for.
	clockWarned atomic.Value
}

// backend is the daemon's ipc.Backend: it owns the apps, their clients, the
// queue bound and the counters, and answers every accepted notification
// exactly once.
type backend struct {
	log *slog.Logger
	cfg *config.Config
	// requestTimeout (a time.Duration) and queueCap change on config reload.
	requestTimeout atomic.Int64
	queueCap       atomic.Int64
	started        time.Time
	socket         string
	// unregistered records 410 answers; nil when unregistered_file is off.
	unregistered *unregisteredLog
	// reload is called by the "reload" op and SIGHUP.
	reload func(ctx context.Context) (*ipc.ReloadReport, error)

	apps atomic.Pointer[map[string]*appState]

	pending atomic.Int64 // accepted, not yet answered
	retries atomic.Uint64
	sent    atomic.Uint64
	failed  atomic.Uint64
	refused atomic.Uint64

	// mu guards shutting and the Add side of wg and of each envSender's
	// active: Submit holds it for reading, shutdown and the app swap of a
	// reload for writing, so no notification is accepted by a sender that
	// is being retired.
	mu       sync.RWMutex
	shutting bool
	// lastReload and lastReloadErr describe the last config reload.
	lastReload    time.Time
	lastReloadErr error
	wg            sync.WaitGroup // one per accepted notification

	// drainCtx is cancelled when the shutdown deadline passes: every
	// notification still waiting is then answered shutting_down.
	drainCtx    context.Context
	drainCancel context.CancelFunc
}

func newBackend(cfg *config.Config, log *slog.Logger) *backend {
	b := &backend{
		log:     log,
		cfg:     cfg,
		started: time.Now(),
	}
	b.requestTimeout.Store(int64(cfg.RequestTimeout))
	b.queueCap.Store(int64(cfg.QueueSize))
	b.drainCtx, b.drainCancel = context.WithCancel(context.Background())
	empty := map[string]*appState{}
	b.apps.Store(&empty)
	return b
}

// buildApps loads every credential and makes (but does not start) a client
// per app and environment.
func buildApps(cfg *config.Config, log *slog.Logger, now time.Time, clock func() time.Time) (map[string]*appState, error) {
	apps := map[string]*appState{}
	var errs []error
	for i := range cfg.Apps {
		st, err := buildApp(&cfg.Apps[i], log, now, clock)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		apps[st.cfg.Name] = st
	}
	if len(errs) > 0 {
		for _, st := range apps {
			st.close()
		}
		return nil, errors.Join(errs...)
	}
	return apps, nil
}

// buildApp makes one app's senders; on error nothing is left open. clock
// drives the token schedule (nil: time.Now).
func buildApp(ac *config.AppConfig, log *slog.Logger, now time.Time, clock func() time.Time) (*appState, error) {
	st := &appState{cfg: ac, envs: map[string]*envSender{}}
	var errs []error
	if ac.Token != nil {
		key, err := apns.LoadTokenKey(ac.Token.KeyFile, ac.Token.KeyID, ac.Token.TeamID, now)
		if err != nil {
			return nil, fmt.Errorf("app %q token: %w", ac.Name, err)
		}
		warnReadable(log, ac.Name, ac.Token.KeyFile)
		st.token = apns.NewTokenSource(key, apns.TokenOptions{Now: clock})
	}
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
	if len(errs) > 0 {
		st.close()
		return nil, errors.Join(errs...)
	}
	return st, nil
}

// start opens the app's connections.
func (st *appState) start() {
	for _, es := range st.envs {
		es.client.Start()
	}
}

// close closes the app's connections at once.
func (st *appState) close() {
	for _, es := range st.envs {
		es.client.Close()
	}
}

// retire closes each sender's connections once the notifications it
// accepted are answered.
func (st *appState) retire() {
	for _, es := range st.envs {
		go func() {
			es.active.Wait()
			es.client.Close()
		}()
	}
}

func newEnvSender(app *appState, ec *config.EnvConfig, log *slog.Logger, now time.Time) (*envSender, error) {
	roots, err := rootCAs(ec.CAFile)
	if err != nil {
		return nil, err
	}
	es := &envSender{app: app, cfg: ec, cred: &credential{}}
	opts := apns.ClientOptions{
		Endpoint:    ec.Endpoint,
		RootCAs:     roots,
		Connections: ec.Connections,
		Logger:      log.With("component", "apns", "app", app.cfg.Name, "env", ec.Name),
	}
	if ec.AuthKind() == "token" {
		if app.token == nil {
			return nil, fmt.Errorf("no credential: set cert_file or p12_file, or configure [apps.token]")
		}
		es.token = app.token
		es.tokenFP = app.token.Info().KeyFingerprint
		opts.Authorization = app.token.Authorization
	} else {
		cert, err := apns.LoadCertificate(ec.Cert, now)
		if err != nil {
			return nil, err
		}
		for _, w := range apns.KeyFileWarnings(ec.Cert) {
			log.Warn(w, "app", app.cfg.Name, "env", ec.Name)
		}
		if err := checkFit(cert, app.cfg.Topic, ec.Endpoint); err != nil {
			return nil, err
		}
		es.cred.cur.Store(cert)
		opts.GetClientCertificate = es.cred.getClientCertificate
	}
	client, err := apns.NewClient(opts)
	if err != nil {
		return nil, err
	}
	es.client = client
	return es, nil
}

// files lists the environment's credential files.
func (es *envSender) files() []string {
	if es.token != nil {
		return []string{es.app.cfg.Token.KeyFile}
	}
	return es.cfg.Cert.Paths()
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
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.shutting {
		b.refused.Add(1)
		return nil, ipc.Errorf(ipc.CodeShuttingDown, true, "apnsd is shutting down; send again once it is back")
	}
	app, e := pickApp(b.appMap(), sr.App)
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
	if b.pending.Add(1) > b.queueCap.Load() {
		b.pending.Add(-1)
		b.refused.Add(1)
		return nil, ipc.Errorf(ipc.CodeQueueFull, true, "queue is full (%d notifications waiting); retry later", b.queueCap.Load())
	}
	b.wg.Add(1)
	es.active.Add(1)

	n := sr.Notification
	if n.Topic == "" {
		n.Topic = app.cfg.Topic + topicSuffix[n.PushType]
	}
	if n.ApnsID == "" {
		// Fixed here so that a retry carries the same apns-id.
		n.ApnsID = apns.NewUUID()
	}
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

// deliver sends n and puts exactly one answer on ch. It retries what
// Apple's guidance allows (see sendWithRetry) within the request timeout.
func (b *backend) deliver(es *envSender, n *apns.Notification, ch chan<- *ipc.Response) {
	defer b.wg.Done()
	defer es.active.Done()
	defer b.pending.Add(-1)
	ctx, cancel := context.WithTimeout(b.drainCtx, time.Duration(b.requestTimeout.Load()))
	defer cancel()
	res, err := b.sendWithRetry(ctx, es, n)
	ch <- b.answer(es, n, res, err)
}

// Retry policy. Transient failures are sent again with exponential backoff
// and jitter, within the request's deadline and keeping the same apns-id:
// a connection that failed before APNs answered, 500, 503, and 429
// TooManyRequests. Everything else APNs says is final. When the deadline
// leaves no room for another try, the last answer from APNs is returned.
const (
	maxAttempts  = 5
	retryBackoff = 100 * time.Millisecond
	retryMax     = 5 * time.Second
)

func (b *backend) sendWithRetry(ctx context.Context, es *envSender, n *apns.Notification) (*apns.Response, error) {
	backoff := retryBackoff
	tokenRetried := false
	for attempt := 1; ; attempt++ {
		res, err := es.client.Send(ctx, n)
		var ce *apns.ConnError
		switch {
		case err == nil && res.StatusCode == 403 && res.Reason == apns.ReasonExpiredProviderToken && es.token != nil && !tokenRetried:
			// Refresh the token (only if Apple's 20-minute rule allows)
			// and try once more at once.
			tokenRetried = true
			if !es.token.Expired(res.Authorization) {
				// Logged once per token, not per notification.
				if es.app.clockWarned.Swap(res.Authorization) != res.Authorization {
					b.log.Error("APNs says the provider token expired, but it is younger than 20 minutes, so Apple forbids a new one yet: is this host's clock right?", "app", es.app.cfg.Name, "env", es.cfg.Name)
				}
				return res, nil
			}
			b.retries.Add(1)
			continue
		case err == nil && !apns.Retryable(res.StatusCode, res.Reason):
			return res, nil
		case err != nil && !errors.As(err, &ce):
			return nil, err // no connection, deadline, or closed: nothing to retry
		}
		if attempt >= maxAttempts {
			return res, err
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait+50*time.Millisecond {
			return res, err
		}
		b.retries.Add(1)
		b.log.Debug("retrying notification", "app", es.app.cfg.Name, "env", es.cfg.Name, "attempt", attempt+1, "apns_id", n.ApnsID, "after", describe(res, err))
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return res, err
		}
		backoff = min(backoff*2, retryMax)
	}
}

func describe(res *apns.Response, err error) string {
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%d %s", res.StatusCode, res.Reason)
}

func (b *backend) answer(es *envSender, n *apns.Notification, res *apns.Response, err error) *ipc.Response {
	log := func() *slog.Logger { // only built on the paths that log
		return b.log.With("app", es.app.cfg.Name, "env", es.cfg.Name, "token", TruncateToken(n.DeviceToken))
	}
	if err == nil {
		r := &ipc.Response{OK: res.OK(), Status: res.StatusCode, Reason: res.Reason, ApnsID: res.ApnsID}
		if res.StatusCode == 410 {
			r.Timestamp = res.Timestamp
			if err := b.unregistered.add(UnregisteredRecord{
				Time: time.Now().UTC(), App: es.app.cfg.Name, Env: es.cfg.Name, Token: n.DeviceToken,
				Reason: res.Reason, Timestamp: res.Timestamp, ApnsID: res.ApnsID,
			}); err != nil {
				log().Error("cannot append to unregistered_file", "err", err)
			}
		}
		if r.OK {
			b.sent.Add(1)
			es.sent.Add(1)
		} else {
			retry := apns.Retryable(res.StatusCode, res.Reason)
			r.Retryable = &retry
			b.failed.Add(1)
			es.failed.Add(1)
			log().Info("APNs refused notification", "status", res.StatusCode, "reason", res.Reason, "apns_id", res.ApnsID)
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
		e = ipc.Errorf(ipc.CodeTimeout, true, "no answer from APNs within %s (if it was already sent, APNs may or may not have received it)", time.Duration(b.requestTimeout.Load()))
	case errors.As(err, &ce):
		e = ipc.Errorf(ipc.CodeUnavailable, true, "%v (APNs may or may not have received it)", err)
	case errors.Is(err, apns.ErrClosed):
		e = ipc.Errorf(ipc.CodeShuttingDown, true, "apnsd is shutting down")
	default:
		e = ipc.Errorf(ipc.CodeInternal, false, "%v", err)
	}
	es.logUndelivered(log(), e)
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
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			b.log.Error("notifications still unanswered 5s after the shutdown deadline; exiting anyway", "count", b.pending.Load())
		}
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
		Unregistered:  b.cfg.UnregisteredFile,
	}
	b.mu.RLock()
	rep.LastReloadAt = b.lastReload
	if b.lastReloadErr != nil {
		rep.LastReloadError = b.lastReloadErr.Error()
		rep.LastReloadErrorAt = b.lastReload
	}
	b.mu.RUnlock()
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
				Files: es.files(),
			}
			if es.token != nil {
				ti := es.token.Info()
				st.KeyID, st.TeamID, st.LoadedAt = ti.KeyID, ti.TeamID, ti.KeyLoadedAt
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
		Capacity: int(b.queueCap.Load()),
		Retries:  b.retries.Load(),
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
			es.setReloadErr(err, now)
			switch {
			case err != nil:
				rep.Errors = append(rep.Errors, where+": "+err.Error())
				b.log.Error("credential reload failed; keeping the current credential", "app", name, "env", envName, "err", err)
			case changed:
				rep.Reloaded = append(rep.Reloaded, where+": "+es.describeCredential())
				b.log.Info("credential reloaded; moving to new connections", "app", name, "env", envName, "credential", es.describeCredential())
			}
		}
	}
	return rep
}

func (es *envSender) reloadCredential(now time.Time) (changed bool, err error) {
	if es.token != nil {
		return es.reloadTokenKey(now)
	}
	cert, err := apns.LoadCertificate(es.cfg.Cert, now)
	if err != nil {
		return false, err
	}
	if err := checkFit(cert, es.app.cfg.Topic, es.cfg.Endpoint); err != nil {
		return false, err
	}
	es.cred.mu.Lock()
	defer es.cred.mu.Unlock()
	old := es.cred.cur.Load()
	if old != nil && old.Fingerprint == cert.Fingerprint {
		return false, nil
	}
	es.cred.cur.Store(cert)
	es.client.Rotate()
	return true, nil
}

// describeCredential says which credential the environment now presents:
// the certificate's subject and expiry, or the token key's id and
// fingerprint (never key material).
func (es *envSender) describeCredential() string {
	if es.token != nil {
		ti := es.token.Info()
		return fmt.Sprintf("new token key %s (team %s, fingerprint %s)", ti.KeyID, ti.TeamID, ti.KeyFingerprint)
	}
	cert := es.cred.cur.Load()
	if cert == nil {
		return "no certificate loaded"
	}
	return fmt.Sprintf("new certificate %q, not after %s", cert.Subject, cert.NotAfter.Format(time.DateOnly))
}

// senders lists every environment sender of the current apps, in a stable
// order.
func (b *backend) senders() []*envSender {
	var out []*envSender
	apps := b.appMap()
	for _, name := range appNames(apps) {
		for _, env := range []string{apns.Sandbox, apns.Production} {
			if es := apps[name].envs[env]; es != nil {
				out = append(out, es)
			}
		}
	}
	return out
}

// credentialFiles lists every credential file of the current apps.
func (b *backend) credentialFiles() []string {
	var files []string
	for _, es := range b.senders() {
		files = append(files, es.files()...)
	}
	return files
}

// setReloadErr records the outcome of a reload for status: err, or nil
// for success.
func (es *envSender) setReloadErr(err error, now time.Time) {
	es.cred.mu.Lock()
	defer es.cred.mu.Unlock()
	es.cred.lastErr = err
	if err != nil {
		es.cred.lastErrAt = now
	}
}

// reloadTokenKey re-reads the app's .p8 key. A different key is handed to
// the shared token source (which mints with it at once) and this
// environment moves to new connections.
func (es *envSender) reloadTokenKey(now time.Time) (changed bool, err error) {
	tc := es.app.cfg.Token
	key, err := apns.LoadTokenKey(tc.KeyFile, tc.KeyID, tc.TeamID, now)
	if err != nil {
		return false, err
	}
	es.cred.mu.Lock()
	defer es.cred.mu.Unlock()
	if key.Fingerprint == es.tokenFP {
		return false, nil
	}
	if es.token.Info().KeyFingerprint != key.Fingerprint {
		es.token.SetKey(key)
	}
	es.tokenFP = key.Fingerprint
	es.client.Rotate()
	return true, nil
}

// warnReadable warns when a key file is readable by other users.
func warnReadable(log *slog.Logger, app, path string) {
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o004 != 0 {
		log.Warn(fmt.Sprintf("key file %s is readable by other users (mode %#o); chmod 600 it", path, fi.Mode().Perm()), "app", app)
	}
}

// checkFit refuses a certificate that cannot serve this app and endpoint
// (see config.CertificateMisfits).
func checkFit(cert *apns.Certificate, topic, endpoint string) error {
	if m := config.CertificateMisfits(cert, topic, endpoint); len(m) > 0 {
		return errors.New(strings.Join(m, "; "))
	}
	return nil
}
