package config

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/apnsd/apnsd/internal/apns"
	"github.com/apnsd/apnsd/internal/defaults"
)

// Defaults applied to keys the file leaves out.
const (
	DefaultRequestTimeout = 30 * time.Second
	DefaultQueueSize      = 10000
	// DefaultGCPercent is the Go garbage collector's GOGC for apnsd: 400
	// costs a few MiB more heap under load and halves apnsd's CPU per
	// notification (docs/performance.md, "Garbage collection").
	DefaultGCPercent = 400
	// DefaultMaxProcs is Go's GOMAXPROCS for apnsd: one core runs every
	// notification apnsd can get from APNs (over 100,000 a second here),
	// and keeping its goroutines on one thread spares the cross-thread
	// wake-ups that cost a sidecar more CPU per notification than the
	// work itself (docs/performance.md, "One core").
	DefaultMaxProcs        = 1
	DefaultShutdownTimeout = 15 * time.Second
	DefaultLogLevel        = "info"
	DefaultLogFormat       = "auto"
	DefaultSocketMode      = os.FileMode(0o660)
	// DefaultMaxLineBytes fits a full multicast: 1000 tokens of 64 hex
	// digits are about 67 KB of line with a payload. Memory stays bounded
	// per connection: one line is buffered at a time (a longer one is
	// skipped, not kept), and what is decoded is bounded by queue_size.
	DefaultMaxLineBytes      = 128 << 10
	DefaultMaxPendingPerConn = 1024
	DefaultConnections       = 1
	// DefaultStateDir is where the spool of accepted wait:false
	// notifications lives (the unit's StateDirectory=apnsd).
	DefaultStateDir = "/var/lib/apnsd"
	// DefaultSpoolMaxBytes bounds the spool's pending records.
	DefaultSpoolMaxBytes = 64 << 20
	// Connection limits: below the usual fd limit of 1024, so that the
	// daemon keeps descriptors for APNs dials and files however many
	// clients connect (the daemon lowers max_connections further when its
	// RLIMIT_NOFILE is smaller).
	DefaultMaxConnections       = 512
	DefaultMaxConnectionsPerUID = 128
	DefaultIdleTimeout          = 2 * time.Minute
	DefaultLineTimeout          = 10 * time.Second
)

// DefaultUnavailableWait is how long a send waits for a connection to APNs
// while none is up (unavailable_wait); Parse lowers it to request_timeout
// when that is shorter.
const DefaultUnavailableWait = 3 * time.Second

// Limits enforced by Validate.
const (
	// MinLineBytes leaves room for a 5120-byte VoIP payload plus the
	// request around it.
	MinLineBytes   = 8192
	MaxLineBytes   = 16 << 20
	MaxConnections = 32
	// MinSpoolMaxBytes leaves room for the largest record (1 MiB).
	MinSpoolMaxBytes = 1 << 20
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
	// GCPercent is the garbage collector's GOGC (25 to 10000); the GOGC
	// environment variable, when set, wins over it.
	GCPercent int
	// MaxProcs is how many threads run Go code at once (Go's GOMAXPROCS);
	// 0 is Go's default (every CPU the process may use). The GOMAXPROCS
	// environment variable, when set, wins over it.
	MaxProcs int
	// ShutdownTimeout is the graceful drain deadline on SIGTERM.
	ShutdownTimeout time.Duration
	// UnavailableWait is how long a notification waits while no
	// connection to APNs is up before it is answered unavailable
	// (retryable), instead of waiting its whole request_timeout; at most
	// RequestTimeout. Parse copies it into every EnvConfig.
	UnavailableWait time.Duration
	// LogLevel is one of LogLevels.
	LogLevel string
	// LogFormat is one of LogFormats; "auto" means journal when
	// JOURNAL_STREAM is set, else text.
	LogFormat string
	// UnregisteredFile is an absolute path of a JSONL file for 410
	// answers, or "" for none.
	UnregisteredFile string
	// StateDir is the absolute path of the directory holding the spool of
	// accepted "wait":false notifications, or "" for none (then
	// "wait":false is refused: queued:true always means on disk).
	StateDir string
	// SpoolMaxBytes bounds the bytes of spooled notifications not yet
	// answered by APNs; beyond it "wait":false sends get queue_full.
	SpoolMaxBytes int64
	Socket        SocketConfig
	// Metrics is the [metrics] table; its zero value serves no metrics.
	Metrics MetricsConfig
	Apps    []AppConfig
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
	// AdminUIDs and AdminGIDs may run the admin ops (reload, the full
	// status), besides root and apnsd's own uid.
	AdminUIDs []int
	AdminGIDs []int
	// MaxConnections caps the open client connections, and
	// MaxConnectionsPerUID those of one peer uid.
	MaxConnections       int
	MaxConnectionsPerUID int
	// IdleTimeout closes a connection that owes nothing and sent nothing
	// (or does not read its answers) for that long; LineTimeout one that
	// started a line and did not finish it within that time.
	IdleTimeout time.Duration
	LineTimeout time.Duration
}

// MetricsConfig is the [metrics] table: the Prometheus endpoint.
type MetricsConfig struct {
	// Listen is where /metrics is served: "host:port" (TCP, e.g.
	// "127.0.0.1:9464") or "unix:/absolute/path" (a Unix socket). ""
	// serves no metrics.
	Listen string
}

// UnixPath returns the socket path of a "unix:" Listen, and false for a
// TCP address.
func (m MetricsConfig) UnixPath() (string, bool) {
	return strings.CutPrefix(m.Listen, "unix:")
}

// AppConfig is one [[apps]] entry.
type AppConfig struct {
	// Name is how requests refer to the app ("app").
	Name string
	// Topic is the bundle id, the default apns-topic.
	Topic string
	// DefaultEnv is "sandbox" or "production", and is configured.
	DefaultEnv string
	// Token is the app's token (.p8) credential, or nil. An environment's
	// own [apps.<env>.token] overrides it (EnvConfig.Token).
	Token *TokenConfig
	// Sandbox and Production are the environments; at least one is set.
	Sandbox, Production *EnvConfig
	// AllowUIDs and AllowGIDs, when not empty, are who may send as this
	// app (peer uid, or primary or supplementary group); root always may.
	AllowUIDs []int
	AllowGIDs []int
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

// TokenFor returns the token credential environment e uses: its own
// [apps.<env>.token] if set, else the app's [apps.token] (nil if neither).
func (a *AppConfig) TokenFor(e *EnvConfig) *TokenConfig {
	if e != nil && e.Token != nil {
		return e.Token
	}
	return a.Token
}

// TokenConfig is an [apps.token] (or [apps.<env>.token]) table:
// token-based authentication.
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
	// ManageEndpoint is the base URL of Apple's broadcast channel
	// management API for this environment; Parse fills in the default
	// (apns.ManageSandboxURL or apns.ManageProductionURL), and "" in a
	// Config built otherwise means that default (see ManageURL).
	ManageEndpoint string
	// Token, when set, is this environment's own token key
	// ([apps.<env>.token]); it overrides the app's [apps.token]. Apple
	// issues keys scoped to one environment.
	Token *TokenConfig
	// CAFile holds extra PEM roots to trust for Endpoint; "" means the
	// system roots.
	CAFile string
	// Connections is the number of persistent HTTP/2 connections.
	Connections int
	// UnavailableWait is the top-level unavailable_wait (Config.
	// UnavailableWait), which Parse copies here so that an environment's
	// client is built from its EnvConfig alone (and a config reload that
	// changes it rebuilds the apps); 0 means the transport's default (3s).
	UnavailableWait time.Duration
}

// ManageURL is ManageEndpoint, or Apple's default for the environment.
func (e *EnvConfig) ManageURL() string {
	switch {
	case e.ManageEndpoint != "":
		return e.ManageEndpoint
	case e.Name == apns.Production:
		return apns.ManageProductionURL
	}
	return apns.ManageSandboxURL
}

// AuthKind returns "certificate" when the environment has a certificate
// credential and "token" when it uses a token key (its own or the app's).
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
		GCPercent:       DefaultGCPercent,
		MaxProcs:        DefaultMaxProcs,
		ShutdownTimeout: DefaultShutdownTimeout,
		UnavailableWait: DefaultUnavailableWait,
		LogLevel:        DefaultLogLevel,
		LogFormat:       DefaultLogFormat,
		StateDir:        DefaultStateDir,
		SpoolMaxBytes:   DefaultSpoolMaxBytes,
		Socket: SocketConfig{
			Path:                 defaults.Socket,
			Mode:                 DefaultSocketMode,
			MaxLineBytes:         DefaultMaxLineBytes,
			MaxPendingPerConn:    DefaultMaxPendingPerConn,
			MaxConnections:       DefaultMaxConnections,
			MaxConnectionsPerUID: DefaultMaxConnectionsPerUID,
			IdleTimeout:          DefaultIdleTimeout,
			LineTimeout:          DefaultLineTimeout,
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
