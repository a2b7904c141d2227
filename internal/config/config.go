package config

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/apnsd/apnsd/internal/apns"
)

// Defaults applied to keys the file leaves out.
const (
	DefaultRequestTimeout    = 30 * time.Second
	DefaultQueueSize         = 10000
	DefaultShutdownTimeout   = 15 * time.Second
	DefaultLogLevel          = "info"
	DefaultLogFormat         = "auto"
	DefaultSocketPath        = "/run/apnsd/apnsd.sock"
	DefaultSocketMode        = os.FileMode(0o660)
	DefaultMaxLineBytes      = 65536
	DefaultMaxPendingPerConn = 1024
	DefaultConnections       = 1
)

// Limits enforced by Validate.
const (
	// MinLineBytes leaves room for a 5120-byte VoIP payload plus the
	// request around it.
	MinLineBytes   = 8192
	MaxLineBytes   = 16 << 20
	MaxConnections = 32
	// MaxSocketPath is the longest path a Unix socket address can hold on
	// Linux (sun_path is 108 bytes including the terminating NUL).
	MaxSocketPath = 107
)

// LogLevels and LogFormats are the accepted values of log_level and
// log_format.
var (
	LogLevels  = []string{"debug", "info", "warn", "error"}
	LogFormats = []string{"auto", "text", "json", "journal"}
)

// ErrInvalid matches (with errors.Is) every problem Parse, Load, Validate
// and CheckFiles report about the configuration's content. An unreadable
// configuration file is reported with the *fs.PathError instead.
var ErrInvalid = errors.New("invalid configuration")

// FieldError is one problem with the configuration. It matches ErrInvalid
// and, through Err, the underlying cause (for example apns.ErrCertExpired
// from CheckFiles).
type FieldError struct {
	// File is the configuration file's name (Config.Path); may be "".
	File string
	// App is the index in Config.Apps the problem is in, or -1.
	App int
	// AppName is that app's name, if it has one.
	AppName string
	// Field is the key path inside the file or app, such as
	// "socket.mode" or "sandbox.connections"; "" for a syntax error.
	Field string
	// Msg says what is wrong.
	Msg string
	// Err is the underlying cause, if any.
	Err error
}

// Error renders `apnsd.toml: apps[1] (name "shop"): sandbox.connections:
// must be between 1 and 32, got 0`.
func (e *FieldError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(": ")
	}
	if e.App >= 0 {
		fmt.Fprintf(&b, "apps[%d]", e.App)
		if e.AppName != "" {
			fmt.Fprintf(&b, " (name %q)", e.AppName)
		}
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap returns ErrInvalid and, when set, Err.
func (e *FieldError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrInvalid}
	}
	return []error{ErrInvalid, e.Err}
}

// Config is apnsd's configuration. Load and Parse return it with defaults
// applied, relative paths resolved and Validate passed. It is not safe to
// modify while the daemon uses it; a reload builds a new one.
type Config struct {
	// RequestTimeout bounds one notification, from acceptance to Apple's
	// answer.
	RequestTimeout time.Duration
	// QueueSize is the number of notifications accepted but not yet
	// answered, daemon-wide; beyond it requests get queue_full.
	QueueSize int
	// ShutdownTimeout is the graceful drain deadline on SIGTERM.
	ShutdownTimeout time.Duration
	// LogLevel is one of LogLevels.
	LogLevel string
	// LogFormat is one of LogFormats; "auto" means journal when
	// JOURNAL_STREAM is set, else text.
	LogFormat string
	// UnregisteredFile is an absolute path of a JSONL file for 410
	// answers, or "" for none.
	UnregisteredFile string
	Socket           SocketConfig
	Apps             []AppConfig
	// Path is the file the configuration came from ("" for Default).
	Path string
}

// SocketConfig is the [socket] table: the Unix socket clients talk to.
type SocketConfig struct {
	// Path is the socket's absolute path.
	Path string
	// Mode is the socket file's permission bits.
	Mode os.FileMode
	// Group is a group name or numeric gid to chown the socket to; "" is
	// the daemon's primary group.
	Group string
	// MaxLineBytes is the longest request line accepted.
	MaxLineBytes int
	// MaxPendingPerConn is the number of requests read from one connection
	// but not yet answered; reading pauses beyond it.
	MaxPendingPerConn int
	// AllowUIDs and AllowGIDs, when not empty, restrict which peers
	// (SO_PEERCRED) may use the socket.
	AllowUIDs []int
	AllowGIDs []int
}

// AppConfig is one [[apps]] entry.
type AppConfig struct {
	// Name is how requests refer to the app ("app").
	Name string
	// Topic is the bundle id, the default apns-topic.
	Topic string
	// DefaultEnv is "sandbox" or "production", and is configured.
	DefaultEnv string
	// Token is the app's token (.p8) credential, or nil.
	Token *TokenConfig
	// Sandbox and Production are the environments; at least one is set.
	Sandbox, Production *EnvConfig
}

// Env returns the environment named name ("sandbox" or "production"), or
// nil if it is not configured.
func (a *AppConfig) Env(name string) *EnvConfig {
	switch name {
	case apns.Sandbox:
		return a.Sandbox
	case apns.Production:
		return a.Production
	}
	return nil
}

// TokenConfig is an [apps.token] table: token-based authentication.
type TokenConfig struct {
	// KeyFile is the .p8 file (PKCS#8 P-256 key).
	KeyFile string
	// KeyID is the 10-character key id and TeamID the 10-character team id.
	KeyID  string
	TeamID string
}

// EnvConfig is an [apps.sandbox] or [apps.production] table.
type EnvConfig struct {
	// Name is "sandbox" or "production".
	Name string
	// Cert is the certificate credential; all empty when the environment
	// uses the app's token.
	Cert apns.CertFiles
	// Endpoint is the APNs base URL, e.g. "https://api.push.apple.com:443".
	Endpoint string
	// CAFile holds extra PEM roots to trust for Endpoint; "" means the
	// system roots.
	CAFile string
	// Connections is the number of persistent HTTP/2 connections.
	Connections int
}

// AuthKind returns "certificate" when the environment has a certificate
// credential and "token" when it uses the app's [apps.token].
func (e *EnvConfig) AuthKind() string {
	if e.Cert.CertFile != "" || e.Cert.P12File != "" {
		return "certificate"
	}
	return "token"
}

// Default returns a configuration with every default and no apps. It does
// not pass Validate until at least one app is added.
func Default() *Config {
	return &Config{
		RequestTimeout:  DefaultRequestTimeout,
		QueueSize:       DefaultQueueSize,
		ShutdownTimeout: DefaultShutdownTimeout,
		LogLevel:        DefaultLogLevel,
		LogFormat:       DefaultLogFormat,
		Socket: SocketConfig{
			Path:              DefaultSocketPath,
			Mode:              DefaultSocketMode,
			MaxLineBytes:      DefaultMaxLineBytes,
			MaxPendingPerConn: DefaultMaxPendingPerConn,
		},
	}
}

// App returns the app named name, or nil.
func (c *Config) App(name string) *AppConfig {
	for i := range c.Apps {
		if c.Apps[i].Name == name {
			return &c.Apps[i]
		}
	}
	return nil
}

// Load reads and parses the configuration file at path; see Parse. Relative
// file paths in it are resolved against path's directory.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading configuration: %w", err)
	}
	return Parse(data, path)
}

// Parse decodes data, the content of the configuration file name, applies
// defaults, resolves relative file paths against name's directory and
// validates the result. Unknown keys are errors. Every error matches
// ErrInvalid; several problems are reported together (errors.Join of
// *FieldError).
func Parse(data []byte, name string) (*Config, error) {
	var fc fileConfig
	md, err := toml.Decode(string(data), &fc)
	if err != nil {
		return nil, decodeError(name, err)
	}
	if err := undecodedError(name, md.Undecoded()); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(filepath.Dir(name))
	if err != nil {
		return nil, fmt.Errorf("%s: resolving its directory: %w", name, err)
	}
	c := fc.config(dir)
	c.Path = name
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func decodeError(name string, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		msg := pe.Message
		if pe.LastKey != "" {
			msg = pe.LastKey + ": " + msg
		}
		return &FieldError{File: name, App: -1, Msg: fmt.Sprintf("line %d: %s", pe.Position.Line, msg), Err: err}
	}
	msg := strings.TrimPrefix(err.Error(), "toml: ")
	if strings.Contains(msg, `(last key "apps")`) && strings.Contains(msg, "destination has type slice") {
		msg += " (write each app as [[apps]], with double brackets)"
	}
	return &FieldError{File: name, App: -1, Msg: msg, Err: err}
}

// undecodedError reports unknown keys, only the outermost of an unknown
// table, with a suggestion when a known key is close.
func undecodedError(name string, keys []toml.Key) error {
	var errs []error
	var reported []toml.Key
	for _, k := range keys {
		if slices.ContainsFunc(reported, func(r toml.Key) bool {
			return len(r) < len(k) && slices.Equal(r, k[:len(r)])
		}) {
			continue
		}
		reported = append(reported, k)
		msg := "unknown key"
		if s := suggest(k); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		}
		errs = append(errs, &FieldError{File: name, App: -1, Field: k.String(), Msg: msg})
	}
	return errors.Join(errs...)
}

// suggest returns the known key closest to k's last part, or "".
func suggest(k toml.Key) string {
	t := reflect.TypeFor[fileConfig]()
	for _, part := range k[:len(k)-1] {
		f, ok := fieldByTag(t, part)
		if !ok {
			return ""
		}
		t = f.Type
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return ""
		}
	}
	last, best, bestD := k[len(k)-1], "", 3
	for i := range t.NumField() {
		tag := t.Field(i).Tag.Get("toml")
		if d := editDistance(last, tag); d < bestD {
			best, bestD = tag, d
		}
	}
	return best
}

func fieldByTag(t reflect.Type, tag string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		if t.Field(i).Tag.Get("toml") == tag {
			return t.Field(i), true
		}
	}
	return reflect.StructField{}, false
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// The file's shape. Pointers tell "left out" (default) from "set to zero"
// (an error where zero is invalid).
type fileConfig struct {
	RequestTimeout   *duration  `toml:"request_timeout"`
	QueueSize        *int       `toml:"queue_size"`
	ShutdownTimeout  *duration  `toml:"shutdown_timeout"`
	LogLevel         string     `toml:"log_level"`
	LogFormat        string     `toml:"log_format"`
	UnregisteredFile string     `toml:"unregistered_file"`
	Socket           fileSocket `toml:"socket"`
	Apps             []fileApp  `toml:"apps"`
}

type fileSocket struct {
	Path              string       `toml:"path"`
	Mode              *fileMode    `toml:"mode"`
	Group             *stringOrInt `toml:"group"`
	MaxLineBytes      *int         `toml:"max_line_bytes"`
	MaxPendingPerConn *int         `toml:"max_pending_per_conn"`
	AllowUIDs         []int        `toml:"allow_uids"`
	AllowGIDs         []int        `toml:"allow_gids"`
}

type fileApp struct {
	Name       string     `toml:"name"`
	Topic      string     `toml:"topic"`
	DefaultEnv string     `toml:"default_env"`
	Token      *fileToken `toml:"token"`
	Sandbox    *fileEnv   `toml:"sandbox"`
	Production *fileEnv   `toml:"production"`
}

type fileToken struct {
	KeyFile string `toml:"key_file"`
	KeyID   string `toml:"key_id"`
	TeamID  string `toml:"team_id"`
}

type fileEnv struct {
	CertFile        string `toml:"cert_file"`
	KeyFile         string `toml:"key_file"`
	P12File         string `toml:"p12_file"`
	P12PasswordFile string `toml:"p12_password_file"`
	P12PasswordEnv  string `toml:"p12_password_env"`
	Endpoint        string `toml:"endpoint"`
	CAFile          string `toml:"ca_file"`
	Connections     *int   `toml:"connections"`
}

// duration is a Go duration string ("30s"). A bare number is refused: TOML
// integers would otherwise silently mean nanoseconds.
type duration time.Duration

func (d *duration) UnmarshalTOML(v any) error {
	s, ok := v.(string)
	if !ok {
		if n, isInt := v.(int64); isInt {
			return fmt.Errorf("must be a quoted Go duration such as \"%ds\", not the bare number %d", n, n)
		}
		return fmt.Errorf("must be a quoted Go duration such as \"30s\", got %T", v)
	}
	p, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("must be a Go duration such as \"30s\" or \"1m30s\", got %q", s)
	}
	*d = duration(p)
	return nil
}

// fileMode is a string of octal digits ("0660").
type fileMode os.FileMode

func (m *fileMode) UnmarshalTOML(v any) error {
	s, ok := v.(string)
	if !ok {
		return fmt.Errorf("must be a quoted string of octal digits such as \"0660\", got %v (a bare number would be read as decimal)", v)
	}
	if s == "" || strings.Trim(s, "01234567") != "" {
		return fmt.Errorf("must be a string of octal digits such as \"0660\", got %q", s)
	}
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil || n > 0o777 {
		return fmt.Errorf("must be permission bits between \"0000\" and \"0777\", got %q", s)
	}
	*m = fileMode(n)
	return nil
}

// stringOrInt accepts a group as a name or as a number, quoted or not.
type stringOrInt string

func (g *stringOrInt) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case string:
		*g = stringOrInt(x)
	case int64:
		*g = stringOrInt(strconv.FormatInt(x, 10))
	default:
		return fmt.Errorf("must be a group name or a numeric gid, got %T", v)
	}
	return nil
}

func (fc *fileConfig) config(dir string) *Config {
	c := Default()
	if fc.RequestTimeout != nil {
		c.RequestTimeout = time.Duration(*fc.RequestTimeout)
	}
	if fc.QueueSize != nil {
		c.QueueSize = *fc.QueueSize
	}
	if fc.ShutdownTimeout != nil {
		c.ShutdownTimeout = time.Duration(*fc.ShutdownTimeout)
	}
	if fc.LogLevel != "" {
		c.LogLevel = fc.LogLevel
	}
	if fc.LogFormat != "" {
		c.LogFormat = fc.LogFormat
	}
	c.UnregisteredFile = fc.UnregisteredFile // must be absolute: not resolved

	s := fc.Socket
	if s.Path != "" {
		c.Socket.Path = resolve(dir, s.Path)
	}
	if s.Mode != nil {
		c.Socket.Mode = os.FileMode(*s.Mode)
	}
	if s.Group != nil {
		c.Socket.Group = string(*s.Group)
	}
	if s.MaxLineBytes != nil {
		c.Socket.MaxLineBytes = *s.MaxLineBytes
	}
	if s.MaxPendingPerConn != nil {
		c.Socket.MaxPendingPerConn = *s.MaxPendingPerConn
	}
	c.Socket.AllowUIDs = s.AllowUIDs
	c.Socket.AllowGIDs = s.AllowGIDs

	for _, fa := range fc.Apps {
		a := AppConfig{Name: fa.Name, Topic: fa.Topic, DefaultEnv: fa.DefaultEnv}
		if fa.Token != nil {
			a.Token = &TokenConfig{KeyFile: resolve(dir, fa.Token.KeyFile), KeyID: fa.Token.KeyID, TeamID: fa.Token.TeamID}
		}
		a.Sandbox = fa.Sandbox.config(apns.Sandbox, apns.SandboxURL, dir)
		a.Production = fa.Production.config(apns.Production, apns.ProductionURL, dir)
		if a.DefaultEnv == "" {
			a.DefaultEnv = apns.Sandbox
			if a.Production != nil {
				a.DefaultEnv = apns.Production
			}
		}
		c.Apps = append(c.Apps, a)
	}
	return c
}

func (fe *fileEnv) config(name, endpoint, dir string) *EnvConfig {
	if fe == nil {
		return nil
	}
	e := &EnvConfig{
		Name: name,
		Cert: apns.CertFiles{
			CertFile:        resolve(dir, fe.CertFile),
			KeyFile:         resolve(dir, fe.KeyFile),
			P12File:         resolve(dir, fe.P12File),
			P12PasswordFile: resolve(dir, fe.P12PasswordFile),
			P12PasswordEnv:  fe.P12PasswordEnv,
		},
		Endpoint:    fe.Endpoint,
		CAFile:      resolve(dir, fe.CAFile),
		Connections: DefaultConnections,
	}
	if e.Endpoint == "" {
		e.Endpoint = endpoint
	}
	if fe.Connections != nil {
		e.Connections = *fe.Connections
	}
	return e
}

func resolve(dir, p string) string {
	p = expandCredentialsDir(p)
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// expandCredentialsDir replaces $CREDENTIALS_DIRECTORY or
// ${CREDENTIALS_DIRECTORY} in a file path with the directory systemd's
// LoadCredential= fills (it sets that variable for the service). When the
// variable is not set the path is left as written, so the error about the
// missing file shows what was meant.
func expandCredentialsDir(p string) string {
	dir := os.Getenv("CREDENTIALS_DIRECTORY")
	if dir == "" || !strings.Contains(p, "CREDENTIALS_DIRECTORY") {
		return p
	}
	p = strings.ReplaceAll(p, "${CREDENTIALS_DIRECTORY}", dir)
	return strings.ReplaceAll(p, "$CREDENTIALS_DIRECTORY", dir)
}

var (
	appNameRE  = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
	bundleIDRE = regexp.MustCompile(`^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$`)
	appleIDRE  = regexp.MustCompile(`^[A-Za-z0-9]{10}$`)
	envVarRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	groupRE    = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]*\$?$`)
)

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
	if c.ShutdownTimeout <= 0 {
		p.top("shutdown_timeout", "must be positive, got %v", c.ShutdownTimeout)
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
	if s.Group != "" && !groupRE.MatchString(s.Group) {
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
	}{{"socket.allow_uids", s.AllowUIDs}, {"socket.allow_gids", s.AllowGIDs}} {
		for i, id := range l.ids {
			if id < 0 || id > 1<<32-2 {
				p.top(fmt.Sprintf("%s[%d]", l.field, i), "must be an id between 0 and 4294967294, got %d", id)
			}
		}
	}

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
	if !appNameRE.MatchString(a.Name) {
		add("name", "must be letters, digits, '.', '_' or '-', got %q", a.Name)
	}
	if !bundleIDRE.MatchString(a.Topic) {
		add("topic", "must be a bundle id (letters, digits, '-' and '.'), got %q", a.Topic)
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
	if t := a.Token; t != nil {
		if t.KeyFile == "" {
			add("token.key_file", "must be set (the .p8 key file)")
		}
		if !appleIDRE.MatchString(t.KeyID) {
			add("token.key_id", "must be the 10-character key id (letters and digits), got %q", t.KeyID)
		}
		if !appleIDRE.MatchString(t.TeamID) {
			add("token.team_id", "must be the 10-character team id (letters and digits), got %q", t.TeamID)
		}
	}
	for _, slot := range []struct {
		name string
		env  *EnvConfig
	}{{apns.Sandbox, a.Sandbox}, {apns.Production, a.Production}} {
		if slot.env != nil {
			slot.env.validate(p, i, a, slot.name)
		}
	}
}

// appleHosts maps Apple's APNs hosts to their environment.
var appleHosts = map[string]string{
	"api.push.apple.com":         apns.Production,
	"api.sandbox.push.apple.com": apns.Sandbox,
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
	if f.P12PasswordEnv != "" && !envVarRE.MatchString(f.P12PasswordEnv) {
		add("p12_password_env", "must be an environment variable name, got %q", f.P12PasswordEnv)
	}
	if e.AuthKind() == "token" && a.Token == nil && f.KeyFile == "" && f.P12PasswordFile == "" && f.P12PasswordEnv == "" {
		add("", "no credential: set cert_file (with key_file, or a combined PEM) or p12_file, or add [apps.token]")
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
	if env, ok := appleHosts[strings.ToLower(u.Hostname())]; ok && env != slot {
		return fmt.Sprintf("%s is Apple's %s host, but this is [apps.%s]", u.Hostname(), env, slot)
	}
	return ""
}

// CheckFiles loads every credential the configuration names, as the daemon
// would at time now, and returns all problems joined, each naming the app,
// the environment, the field and the file. Beyond apns.LoadCertificate's
// checks it reports a certificate that does not cover the app's topic or is
// marked for the other environment than the Apple host it is used with, an
// unreadable or empty ca_file, and a token key_file that is not a PKCS#8
// P-256 PEM key. Call it after Validate (Load and Parse do).
func (c *Config) CheckFiles(now time.Time) error {
	p := &problems{file: c.Path}
	for i := range c.Apps {
		a := &c.Apps[i]
		usesToken := false
		for _, e := range []*EnvConfig{a.Sandbox, a.Production} {
			if e == nil {
				continue
			}
			if e.CAFile != "" {
				if err := checkCAFile(e.CAFile); err != nil {
					p.add(i, a.Name, e.Name+".ca_file", err, "%v", err)
				}
			}
			if e.AuthKind() == "token" {
				usesToken = true
				continue
			}
			cert, err := apns.LoadCertificate(e.Cert, now)
			if err != nil {
				p.add(i, a.Name, e.Name+"."+certField(e.Cert, err), err, "%v", err)
				continue
			}
			field := e.Name + "." + certField(e.Cert, nil)
			for _, problem := range CertificateMisfits(cert, a.Topic, e.Endpoint) {
				p.add(i, a.Name, field, nil, "%s", problem)
			}
		}
		if a.Token != nil && usesToken {
			if _, err := apns.LoadTokenKey(a.Token.KeyFile, a.Token.KeyID, a.Token.TeamID, now); err != nil {
				p.add(i, a.Name, "token.key_file", err, "%v", err)
			}
		}
	}
	return p.err()
}

// CertificateMisfits lists why a loadable push certificate cannot serve an
// app: it does not cover the app's topic (APNs would answer
// TopicDisallowed), or it is a development certificate for Apple's
// production host or the reverse (BadCertificateEnvironment). Both the
// config check and the daemon (at start and on every reload) use it.
func CertificateMisfits(cert *apns.Certificate, topic, endpoint string) []string {
	var out []string
	file := firstNonEmpty(cert.Source.CertFile, cert.Source.P12File)
	if !cert.Covers(topic) {
		if len(cert.Topics) == 0 {
			out = append(out, fmt.Sprintf("certificate %s names no bundle id (no subject UID, no topics extension): is it an Apple push certificate? (%s)", file, cert.Subject))
		} else {
			out = append(out, fmt.Sprintf("certificate %s is for %s, not the app's topic %q (%s)", file, strings.Join(cert.Topics, ", "), topic, cert.Subject))
		}
	}
	if u, err := url.Parse(endpoint); err == nil {
		hostEnv, apple := appleHosts[strings.ToLower(u.Hostname())]
		if apple && cert.Env != "" && cert.Env != "both" && cert.Env != hostEnv {
			out = append(out, fmt.Sprintf("certificate %s is a %s certificate but the endpoint %s is Apple's %s host; APNs would answer BadCertificateEnvironment", file, cert.Env, u.Host, hostEnv))
		}
	}
	return out
}

// certField names the key of CertFiles a load error is about.
func certField(f apns.CertFiles, err error) string {
	var ce *apns.CredentialError
	if errors.As(err, &ce) {
		switch {
		case errors.Is(err, apns.ErrP12Password) && f.P12PasswordEnv != "" && ce.Path == f.P12File:
			return "p12_password_env"
		case ce.Path == "":
		case ce.Path == f.KeyFile:
			return "key_file"
		case ce.Path == f.P12PasswordFile:
			return "p12_password_file"
		case ce.Path == f.P12File:
			return "p12_file"
		}
	}
	if f.CertFile == "" && f.P12File != "" {
		return "p12_file"
	}
	return "cert_file"
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func checkCAFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("CA file %s: cannot read: %w", path, err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(data) {
		return fmt.Errorf("CA file %s: no PEM CERTIFICATE found", path)
	}
	return nil
}
