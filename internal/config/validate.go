package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/apnsd/apnsd/internal/apns"
)

// maxMaxProcs bounds max_procs (a typo like 10000 is refused, not obeyed).
const maxMaxProcs = 1024

// The name checks below are hand-written instead of regexps so that apnsd
// does not link package regexp (its code and tables are resident at idle:
// docs/performance.md, "Idle RSS"). Each accepts exactly the language of the
// regexp in its comment; names_test.go checks that against the regexp.
// They work on bytes: every accepted byte is ASCII, so a string with any
// other byte (UTF-8 or not) is refused, as the regexp refuses it.

// isAlnum reports whether b is one of A-Z, a-z, 0-9.
func isAlnum(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9'
}

// validAppName is ^[A-Za-z0-9._-]+$.
func validAppName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if b := s[i]; !isAlnum(b) && b != '.' && b != '_' && b != '-' {
			return false
		}
	}
	return true
}

// validBundleID is ^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$: labels of
// [A-Za-z0-9-], at least one, none empty, separated by single dots.
func validBundleID(s string) bool {
	label := 0 // length of the label being read
	for i := 0; i < len(s); i++ {
		switch b := s[i]; {
		case isAlnum(b) || b == '-':
			label++
		case b == '.' && label > 0:
			label = 0
		default:
			return false
		}
	}
	return label > 0
}

// validAppleID is ^[A-Za-z0-9]{10}$.
func validAppleID(s string) bool {
	if len(s) != 10 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) {
			return false
		}
	}
	return true
}

// validEnvVar is ^[A-Za-z_][A-Za-z0-9_]*$.
func validEnvVar(s string) bool {
	if s == "" || '0' <= s[0] && s[0] <= '9' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if b := s[i]; !isAlnum(b) && b != '_' {
			return false
		}
	}
	return true
}

// validGroup is ^[A-Za-z0-9_][A-Za-z0-9._-]*\$?$: a group name, which may
// end in one "$" but not be only "$".
func validGroup(s string) bool {
	if len(s) > 1 && s[len(s)-1] == '$' {
		s = s[:len(s)-1]
	}
	if s == "" || !isAlnum(s[0]) && s[0] != '_' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if b := s[i]; !isAlnum(b) && b != '.' && b != '_' && b != '-' {
			return false
		}
	}
	return true
}

// problems collects FieldErrors.
type problems struct {
	file string
	errs []error
}

func (p *problems) add(app int, appName, field string, err error, format string, args ...any) {
	p.errs = append(p.errs, &FieldError{File: p.file, App: app, AppName: appName, Field: field, Msg: fmt.Sprintf(format, args...), Err: err})
}

func (p *problems) top(field, format string, args ...any) {
	p.add(-1, "", field, nil, format, args...)
}

func (p *problems) err() error { return errors.Join(p.errs...) }

// Validate checks the configuration's structure without touching the file
// system and returns every problem found, joined; each matches ErrInvalid.
// File paths must be absolute by now (Parse resolves them).
func (c *Config) Validate() error {
	p := &problems{file: c.Path}
	if c.RequestTimeout <= 0 {
		p.top("request_timeout", "must be positive, got %v", c.RequestTimeout)
	}
	if c.QueueSize < 1 {
		p.top("queue_size", "must be at least 1, got %d", c.QueueSize)
	}
	if c.GCPercent < 25 || c.GCPercent > 10000 {
		p.top("gc_percent", "must be from 25 to 10000 (Go's GOGC: 100 is Go's default, 400 apnsd's), got %d", c.GCPercent)
	}
	if c.MaxProcs < 0 || c.MaxProcs > maxMaxProcs {
		p.top("max_procs", "must be from 0 to %d (Go's GOMAXPROCS: 1 is apnsd's default, 0 every CPU), got %d", maxMaxProcs, c.MaxProcs)
	}
	if c.ShutdownTimeout <= 0 {
		p.top("shutdown_timeout", "must be positive, got %v", c.ShutdownTimeout)
	}
	switch {
	case c.UnavailableWait <= 0:
		p.top("unavailable_wait", "must be positive, got %v", c.UnavailableWait)
	case c.RequestTimeout > 0 && c.UnavailableWait > c.RequestTimeout:
		p.top("unavailable_wait", "must be at most request_timeout (%v), got %v", c.RequestTimeout, c.UnavailableWait)
	}
	if !slices.Contains(LogLevels, c.LogLevel) {
		p.top("log_level", "must be one of %s, got %q", strings.Join(LogLevels, ", "), c.LogLevel)
	}
	if !slices.Contains(LogFormats, c.LogFormat) {
		p.top("log_format", "must be one of %s, got %q", strings.Join(LogFormats, ", "), c.LogFormat)
	}
	if c.UnregisteredFile != "" && !filepath.IsAbs(c.UnregisteredFile) {
		p.top("unregistered_file", "must be an absolute path or empty, got %q", c.UnregisteredFile)
	}
	if c.StateDir != "" && !filepath.IsAbs(c.StateDir) {
		p.top("state_dir", "must be an absolute path, or \"\" to refuse \"wait\":false sends, got %q", c.StateDir)
	}
	if c.SpoolMaxBytes < MinSpoolMaxBytes {
		p.top("spool_max_bytes", "must be at least %d (1 MiB), got %d", MinSpoolMaxBytes, c.SpoolMaxBytes)
	}

	s := &c.Socket
	switch {
	case s.Path == "":
		p.top("socket.path", "must not be empty")
	case !filepath.IsAbs(s.Path):
		p.top("socket.path", "must be an absolute path, got %q", s.Path)
	case len(s.Path) > MaxSocketPath:
		p.top("socket.path", "is %d bytes; a Unix socket path can have at most %d", len(s.Path), MaxSocketPath)
	}
	if s.Mode&^os.ModePerm != 0 {
		p.top("socket.mode", "must be permission bits between 0000 and 0777, got %#o", uint32(s.Mode))
	}
	if s.Group != "" && !validGroup(s.Group) {
		p.top("socket.group", "must be a group name or a numeric gid, got %q", s.Group)
	}
	if s.MaxLineBytes < MinLineBytes || s.MaxLineBytes > MaxLineBytes {
		p.top("socket.max_line_bytes", "must be between %d and %d, got %d", MinLineBytes, MaxLineBytes, s.MaxLineBytes)
	}
	if s.MaxPendingPerConn < 1 {
		p.top("socket.max_pending_per_conn", "must be at least 1, got %d", s.MaxPendingPerConn)
	}
	for _, l := range []struct {
		field string
		ids   []int
	}{{"socket.allow_uids", s.AllowUIDs}, {"socket.allow_gids", s.AllowGIDs}, {"socket.admin_uids", s.AdminUIDs}, {"socket.admin_gids", s.AdminGIDs}} {
		for i, id := range l.ids {
			if !validID(id) {
				p.top(fmt.Sprintf("%s[%d]", l.field, i), "must be an id between 0 and 4294967294, got %d", id)
			}
		}
	}
	if s.MaxConnections < 1 {
		p.top("socket.max_connections", "must be at least 1, got %d", s.MaxConnections)
	}
	if s.MaxConnectionsPerUID < 1 || s.MaxConnectionsPerUID > s.MaxConnections {
		p.top("socket.max_connections_per_uid", "must be between 1 and socket.max_connections (%d), got %d", s.MaxConnections, s.MaxConnectionsPerUID)
	}
	if s.IdleTimeout < time.Second {
		p.top("socket.idle_timeout", "must be at least 1s, got %s", s.IdleTimeout)
	}
	if s.LineTimeout < 100*time.Millisecond {
		p.top("socket.line_timeout", "must be at least 100ms, got %s", s.LineTimeout)
	}

	c.Metrics.validate(p)

	if len(c.Apps) == 0 {
		p.top("apps", "no [[apps]] configured; add at least one")
	}
	seen := map[string]int{}
	for i := range c.Apps {
		a := &c.Apps[i]
		if j, dup := seen[a.Name]; dup && a.Name != "" {
			p.add(i, a.Name, "name", nil, "duplicate: apps[%d] has the same name", j)
		} else {
			seen[a.Name] = i
		}
		a.validate(p, i)
	}
	return p.err()
}

func (a *AppConfig) validate(p *problems, i int) {
	add := func(field, format string, args ...any) { p.add(i, a.Name, field, nil, format, args...) }
	if !validAppName(a.Name) {
		add("name", "must be letters, digits, '.', '_' or '-', got %q", a.Name)
	}
	if !validBundleID(a.Topic) {
		add("topic", "must be a bundle id (letters, digits, '-' and '.'), got %q", a.Topic)
	}
	for _, l := range []struct {
		field string
		ids   []int
	}{{"allow_uids", a.AllowUIDs}, {"allow_gids", a.AllowGIDs}} {
		for j, id := range l.ids {
			if !validID(id) {
				add(fmt.Sprintf("%s[%d]", l.field, j), "must be an id between 0 and 4294967294, got %d", id)
			}
		}
	}
	if a.Sandbox == nil && a.Production == nil {
		add("", "no environment configured; add [apps.sandbox] and/or [apps.production]")
	}
	switch a.DefaultEnv {
	case apns.Sandbox, apns.Production:
		if a.Env(a.DefaultEnv) == nil && (a.Sandbox != nil || a.Production != nil) {
			add("default_env", "is %q but there is no [apps.%s]", a.DefaultEnv, a.DefaultEnv)
		}
	default:
		add("default_env", "must be \"sandbox\" or \"production\", got %q", a.DefaultEnv)
	}
	a.Token.validate(func(field, format string, args ...any) { add("token."+field, format, args...) })
	for _, slot := range []struct {
		name string
		env  *EnvConfig
	}{{apns.Sandbox, a.Sandbox}, {apns.Production, a.Production}} {
		if slot.env != nil {
			slot.env.validate(p, i, a, slot.name)
		}
	}
	for field, path := range a.files() {
		if UsesUnsetCredentialsDir(path) {
			add(field, "%s", credentialsDirUnset(path))
		}
	}
}

// files returns the app's file paths by field ("token.key_file",
// "sandbox.cert_file", ...), the empty ones left out.
func (a *AppConfig) files() map[string]string {
	m := map[string]string{}
	if a.Token != nil && a.Token.KeyFile != "" {
		m["token.key_file"] = a.Token.KeyFile
	}
	for _, e := range []*EnvConfig{a.Sandbox, a.Production} {
		if e == nil {
			continue
		}
		for k, v := range map[string]string{"cert_file": e.Cert.CertFile, "key_file": e.Cert.KeyFile, "p12_file": e.Cert.P12File,
			"p12_password_file": e.Cert.P12PasswordFile, "ca_file": e.CAFile} {
			if v != "" {
				m[e.Name+"."+k] = v
			}
		}
	}
	return m
}

// UsesUnsetCredentialsDir reports whether path names $CREDENTIALS_DIRECTORY
// (or ${CREDENTIALS_DIRECTORY}) while the variable is not set, so that it
// could not be expanded.
func UsesUnsetCredentialsDir(path string) bool {
	return strings.Contains(path, "$CREDENTIALS_DIRECTORY") || strings.Contains(path, "${CREDENTIALS_DIRECTORY}")
}

func credentialsDirUnset(path string) string {
	return fmt.Sprintf("%q uses $CREDENTIALS_DIRECTORY, which is not set: systemd sets it for a unit with LoadCredential= (docs/systemd.md); "+
		"outside the unit, set it to the directory holding the files, e.g. CREDENTIALS_DIRECTORY=/etc/apnsd/private apnsd -check", path)
}

func (e *EnvConfig) validate(p *problems, i int, a *AppConfig, slot string) {
	add := func(field, format string, args ...any) {
		if field != "" {
			field = "." + field
		}
		p.add(i, a.Name, slot+field, nil, format, args...)
	}
	if e.Name != slot {
		add("", "EnvConfig.Name is %q, want %q", e.Name, slot)
	}
	if msg := checkEndpoint(e.Endpoint, slot); msg != "" {
		add("endpoint", "%s", msg)
	}
	if msg := checkEndpoint(e.ManageEndpoint, slot); e.ManageEndpoint != "" && msg != "" {
		add("manage_endpoint", "%s", msg)
	}
	e.Token.validate(func(field, format string, args ...any) { add("token."+field, format, args...) })
	if e.Token != nil && e.AuthKind() == "certificate" {
		add("token", "is set together with a certificate (cert_file or p12_file); use one credential per environment")
	}
	if e.Connections < 1 || e.Connections > MaxConnections {
		add("connections", "must be between 1 and %d, got %d", MaxConnections, e.Connections)
	}
	f := e.Cert
	switch {
	case f.CertFile != "" && f.P12File != "":
		add("p12_file", "cert_file and p12_file are both set; use one")
	case f.KeyFile != "" && f.P12File != "":
		add("key_file", "cannot be used with p12_file (the .p12 holds the key)")
	case f.KeyFile != "" && f.CertFile == "":
		add("key_file", "is set without cert_file")
	}
	if f.P12File == "" {
		if f.P12PasswordFile != "" {
			add("p12_password_file", "is set without p12_file")
		}
		if f.P12PasswordEnv != "" {
			add("p12_password_env", "is set without p12_file")
		}
	} else if f.P12PasswordFile != "" && f.P12PasswordEnv != "" {
		add("p12_password_env", "p12_password_file and p12_password_env are both set; use one")
	}
	if f.P12PasswordEnv != "" && !validEnvVar(f.P12PasswordEnv) {
		add("p12_password_env", "must be an environment variable name, got %q", f.P12PasswordEnv)
	}
	if e.AuthKind() == "token" && a.TokenFor(e) == nil && f.KeyFile == "" && f.P12PasswordFile == "" && f.P12PasswordEnv == "" {
		add("", "no credential: set cert_file (with key_file, or a combined PEM) or p12_file, or add [apps.token] or [apps.%s.token]", slot)
	}
}

// validate checks a token table; nil (none) is fine.
func (t *TokenConfig) validate(add func(field, format string, args ...any)) {
	if t == nil {
		return
	}
	if t.KeyFile == "" {
		add("key_file", "must be set (the .p8 key file)")
	}
	if !validAppleID(t.KeyID) {
		add("key_id", "must be the 10-character key id (letters and digits), got %q", t.KeyID)
	}
	if !validAppleID(t.TeamID) {
		add("team_id", "must be the 10-character team id (letters and digits), got %q", t.TeamID)
	}
}

func (m *MetricsConfig) validate(p *problems) {
	if m.Listen == "" {
		return
	}
	if path, ok := m.UnixPath(); ok {
		switch {
		case !filepath.IsAbs(path):
			p.top("metrics.listen", "a unix: socket path must be absolute, got %q", m.Listen)
		case len(path) > MaxSocketPath:
			p.top("metrics.listen", "socket path is %d bytes; a Unix socket path can have at most %d", len(path), MaxSocketPath)
		}
		return
	}
	host, port, err := net.SplitHostPort(m.Listen)
	if err != nil {
		p.top("metrics.listen", "must be \"host:port\" (e.g. \"127.0.0.1:9464\") or \"unix:/path\", got %q", m.Listen)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		p.top("metrics.listen", "has an invalid port in %q", m.Listen)
	}
	if host == "" {
		p.top("metrics.listen", "needs a host: \"%s\" would listen on every interface; write \"0.0.0.0%s\" if that is meant, or \"127.0.0.1%s\"", m.Listen, m.Listen, m.Listen)
	}
}

// checkEndpoint returns what is wrong with an endpoint URL, or "".
func checkEndpoint(s, slot string) string {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Sprintf("is not a URL: %q", s)
	}
	switch {
	case u.Scheme != "https":
		return fmt.Sprintf("must be an https:// URL, got %q", s)
	case u.Host == "" || u.Hostname() == "":
		return fmt.Sprintf("must have a host, got %q", s)
	case u.User != nil:
		return fmt.Sprintf("must not contain user information, got %q", s)
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "":
		return fmt.Sprintf("must be scheme, host and port only (no path or query), got %q", s)
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Sprintf("has an invalid port in %q", s)
		}
	} else if strings.HasSuffix(u.Host, ":") {
		return fmt.Sprintf("has an empty port in %q", s)
	}
	if env, ok := apns.AppleHostEnv(s); ok && env != slot {
		return fmt.Sprintf("%s is Apple's %s host, but this is [apps.%s]", u.Hostname(), env, slot)
	}
	return ""
}

// validID reports whether id can be a uid or gid (0 to 2^32-2; 2^32-1 is
// the kernel's "no id").
func validID(id int) bool { return id >= 0 && id <= 1<<32-2 }
