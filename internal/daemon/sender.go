package daemon

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apnsd/apnsd/internal/apns"
	"github.com/apnsd/apnsd/internal/config"
)

// appState is one configured app: its config and one sender per configured
// environment. It is built whole by buildApp and not changed afterwards,
// except through the senders' own synchronised fields.
type appState struct {
	cfg  *config.AppConfig
	envs map[string]*envSender
	// token is the app's token source ([apps.token]), shared by every
	// connection of the environments that use it; nil when no environment
	// does (none configured, or each has its own [apps.<env>.token]).
	token *apns.TokenSource
	// clockWarned is the last token an "expired but too young" error was
	// logged for.
	clockWarned atomic.Value
}

// envSender sends one app's notifications to one APNs environment.
type envSender struct {
	app    *appState
	cfg    *config.EnvConfig
	client *apns.Client
	// manage is the client for Apple's channel management API
	// (manage_endpoint), same credential; started by the first channel op
	// (channels.go).
	manage *apns.Client
	cred   *credential
	sent   atomic.Uint64
	failed atomic.Uint64
	// active counts notifications accepted for this sender and not yet
	// answered; a retired sender's client closes when it reaches zero.
	active sync.WaitGroup
	// watch is the file watcher's state for this sender's credential
	// files; only reloads touch it, under Daemon.reloadMu.
	watch watchState
	// token is set for token auth (the app's shared source); tokenFP is
	// the fingerprint of the key this sender's connections were opened
	// with (guarded by cred.mu).
	token   *apns.TokenSource
	tokenFP string
	// channels tallies the broadcast channels (channels.go).
	channels channelTally

	// undelivered rate-limits the "not delivered" warning (see
	// logUndelivered).
	undeliveredMu    sync.Mutex
	undeliveredSince time.Time // start of the current summary period
	undeliveredN     int       // failures not yet reported in it
}

// credential holds the certificate an environment currently presents. The
// TLS stack reads it through GetClientCertificate on every new connection,
// so a swap needs no new client.
type credential struct {
	cur atomic.Pointer[apns.Certificate]

	// mu serialises swaps and guards the fields that follow.
	mu        sync.Mutex
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

// buildApps loads every credential and makes (but does not start) a client
// per app and environment. On error nothing is left open.
func buildApps(cfg *config.Config, log *slog.Logger, now time.Time, clock func() time.Time) (map[string]*appState, error) {
	apps := map[string]*appState{}
	var errs []error
	for i := range cfg.Apps {
		st, err := buildApp(&cfg.Apps[i], nil, log, now, clock)
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
// drives the token schedule (nil: time.Now). prev, when set, is the app of
// the same name being replaced by a config reload: its token source is kept
// (and given the key just loaded, which keeps the current JWT if the key is
// the same), so that a config change that leaves the key alone mints no new
// token (Apple answers 429 TooManyProviderTokenUpdates to more than one new
// token per 20 minutes).
func buildApp(ac *config.AppConfig, prev *appState, log *slog.Logger, now time.Time, clock func() time.Time) (*appState, error) {
	st := &appState{cfg: ac, envs: map[string]*envSender{}}
	var errs []error
	if ac.Token != nil && appTokenUsed(ac) {
		key, err := apns.LoadTokenKey(ac.Token.KeyFile, ac.Token.KeyID, ac.Token.TeamID, now)
		if err != nil {
			return nil, fmt.Errorf("app %q token: %w", ac.Name, err)
		}
		warnReadable(log, ac.Name, ac.Token.KeyFile)
		if prev != nil && prev.token != nil {
			prev.token.SetKey(key)
			st.token = prev.token
		} else {
			st.token = apns.NewTokenSource(key, apns.TokenOptions{Now: clock})
		}
	}
	for _, ec := range []*config.EnvConfig{ac.Sandbox, ac.Production} {
		if ec == nil {
			continue
		}
		es, err := newEnvSender(st, ec, log, now, clock)
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

// appTokenUsed reports whether an environment of ac uses the app's
// [apps.token] (token auth without a key of its own).
func appTokenUsed(ac *config.AppConfig) bool {
	for _, ec := range []*config.EnvConfig{ac.Sandbox, ac.Production} {
		if ec != nil && ec.AuthKind() == "token" && ec.Token == nil {
			return true
		}
	}
	return false
}

// newTokenSource loads a .p8 key and makes a token source for it.
func newTokenSource(tc *config.TokenConfig, log *slog.Logger, app string, now time.Time, clock func() time.Time) (*apns.TokenSource, error) {
	key, err := apns.LoadTokenKey(tc.KeyFile, tc.KeyID, tc.TeamID, now)
	if err != nil {
		return nil, err
	}
	warnReadable(log, app, tc.KeyFile)
	return apns.NewTokenSource(key, apns.TokenOptions{Now: clock}), nil
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
		es.manage.Close()
	}
}

func newEnvSender(app *appState, ec *config.EnvConfig, log *slog.Logger, now time.Time, clock func() time.Time) (*envSender, error) {
	roots, err := apns.LoadRootCAs(ec.CAFile)
	if err != nil {
		return nil, err
	}
	es := &envSender{app: app, cfg: ec, cred: &credential{}}
	opts := apns.ClientOptions{
		Endpoint:    ec.Endpoint,
		RootCAs:     roots,
		Connections: ec.Connections,
		Logger:      log.With("component", "apns", "app", app.cfg.Name, "env", ec.Name),
		// unavailable_wait: with no connection up, a send is answered
		// unavailable after this, not at its request_timeout.
		UnavailableWait: ec.UnavailableWait,
	}
	if ec.AuthKind() == "token" {
		src := app.token
		if ec.Token != nil {
			// The environment's own key: its own token source.
			own, err := newTokenSource(ec.Token, log, app.cfg.Name, now, clock)
			if err != nil {
				return nil, fmt.Errorf("token: %w", err)
			}
			src = own
		}
		if src == nil {
			return nil, fmt.Errorf("no credential: set cert_file or p12_file, or configure [apps.token] or [apps.%s.token]", ec.Name)
		}
		es.token = src
		es.tokenFP = src.Info().KeyFingerprint
		opts.Authorization = src.Authorization
	} else {
		cert, err := apns.LoadCertificate(ec.Cert, now)
		if err != nil {
			return nil, err
		}
		for _, w := range apns.KeyFileWarnings(ec.Cert) {
			log.Warn(w, "app", app.cfg.Name, "env", ec.Name)
		}
		if err := apns.CheckCertificateFit(cert, app.cfg.Topic, ec.Endpoint); err != nil {
			return nil, err
		}
		es.cred.cur.Store(cert)
		opts.GetClientCertificate = es.cred.getClientCertificate
	}
	client, err := apns.NewClient(opts)
	if err != nil {
		return nil, err
	}
	mopts := opts
	mopts.Endpoint = ec.ManageURL()
	mopts.Connections = 1
	mopts.Logger = log.With("component", "apns", "app", app.cfg.Name, "env", ec.Name, "api", "channel management")
	manage, err := apns.NewClient(mopts)
	if err != nil {
		client.Close()
		return nil, err
	}
	es.client, es.manage = client, manage
	return es, nil
}

// files lists the environment's credential files.
func (es *envSender) files() []string {
	if es.token != nil {
		return []string{es.tokenConfig().KeyFile}
	}
	return es.cfg.Cert.Paths()
}

// tokenConfig is the token key configuration this environment uses: its
// own [apps.<env>.token] or the app's [apps.token].
func (es *envSender) tokenConfig() *config.TokenConfig { return es.app.cfg.TokenFor(es.cfg) }

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

// appNames lists the apps' names, sorted.
func appNames(apps map[string]*appState) []string {
	names := make([]string, 0, len(apps))
	for n := range apps {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// envOrder is the order in which environments are listed (status, reloads).
var envOrder = []string{apns.Sandbox, apns.Production}

// senders lists every environment sender of the state's apps, in a stable
// order.
func (st *state) senders() []*envSender {
	var out []*envSender
	for _, name := range appNames(st.apps) {
		for _, env := range envOrder {
			if es := st.apps[name].envs[env]; es != nil {
				out = append(out, es)
			}
		}
	}
	return out
}

// credentialFiles lists every credential file of the state's apps.
func (st *state) credentialFiles() []string {
	var files []string
	for _, es := range st.senders() {
		files = append(files, es.files()...)
	}
	return files
}

// warnReadable warns when a key file is readable by other users.
func warnReadable(log *slog.Logger, app, path string) {
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o004 != 0 {
		log.Warn(fmt.Sprintf("key file %s is readable by other users (mode %#o); chmod 600 it", path, fi.Mode().Perm()), "app", app)
	}
}
