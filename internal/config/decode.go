package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/apnsd/apnsd/internal/apns"
)

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
	RequestTimeout   *duration   `toml:"request_timeout"`
	QueueSize        *int        `toml:"queue_size"`
	GCPercent        *int        `toml:"gc_percent"`
	MaxProcs         *int        `toml:"max_procs"`
	ShutdownTimeout  *duration   `toml:"shutdown_timeout"`
	UnavailableWait  *duration   `toml:"unavailable_wait"`
	LogLevel         string      `toml:"log_level"`
	LogFormat        string      `toml:"log_format"`
	UnregisteredFile string      `toml:"unregistered_file"`
	StateDir         *string     `toml:"state_dir"`
	SpoolMaxBytes    *int64      `toml:"spool_max_bytes"`
	Socket           fileSocket  `toml:"socket"`
	Metrics          fileMetrics `toml:"metrics"`
	Apps             []fileApp   `toml:"apps"`
}

type fileMetrics struct {
	Listen string `toml:"listen"`
}

type fileSocket struct {
	Path              string       `toml:"path"`
	Mode              *fileMode    `toml:"mode"`
	Group             *stringOrInt `toml:"group"`
	MaxLineBytes      *int         `toml:"max_line_bytes"`
	MaxPendingPerConn *int         `toml:"max_pending_per_conn"`
	AllowUIDs         []int        `toml:"allow_uids"`
	AllowGIDs         []int        `toml:"allow_gids"`
	AdminUIDs         []int        `toml:"admin_uids"`
	AdminGIDs         []int        `toml:"admin_gids"`
	MaxConnections    *int         `toml:"max_connections"`
	MaxConnsPerUID    *int         `toml:"max_connections_per_uid"`
	IdleTimeout       *duration    `toml:"idle_timeout"`
	LineTimeout       *duration    `toml:"line_timeout"`
}

type fileApp struct {
	Name       string     `toml:"name"`
	Topic      string     `toml:"topic"`
	DefaultEnv string     `toml:"default_env"`
	Token      *fileToken `toml:"token"`
	Sandbox    *fileEnv   `toml:"sandbox"`
	Production *fileEnv   `toml:"production"`
	AllowUIDs  []int      `toml:"allow_uids"`
	AllowGIDs  []int      `toml:"allow_gids"`
}

type fileToken struct {
	KeyFile string `toml:"key_file"`
	KeyID   string `toml:"key_id"`
	TeamID  string `toml:"team_id"`
}

type fileEnv struct {
	CertFile        string     `toml:"cert_file"`
	KeyFile         string     `toml:"key_file"`
	P12File         string     `toml:"p12_file"`
	P12PasswordFile string     `toml:"p12_password_file"`
	P12PasswordEnv  string     `toml:"p12_password_env"`
	Endpoint        string     `toml:"endpoint"`
	ManageEndpoint  string     `toml:"manage_endpoint"`
	CAFile          string     `toml:"ca_file"`
	Connections     *int       `toml:"connections"`
	Token           *fileToken `toml:"token"`
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
	if fc.GCPercent != nil {
		c.GCPercent = *fc.GCPercent
	}
	if fc.MaxProcs != nil {
		c.MaxProcs = *fc.MaxProcs
	}
	if fc.ShutdownTimeout != nil {
		c.ShutdownTimeout = time.Duration(*fc.ShutdownTimeout)
	}
	if fc.UnavailableWait != nil {
		c.UnavailableWait = time.Duration(*fc.UnavailableWait)
	} else if c.RequestTimeout > 0 {
		// Left out: the default, but never longer than request_timeout
		// (a short request_timeout alone stays a valid config).
		c.UnavailableWait = min(c.UnavailableWait, c.RequestTimeout)
	}
	if fc.LogLevel != "" {
		c.LogLevel = fc.LogLevel
	}
	if fc.LogFormat != "" {
		c.LogFormat = fc.LogFormat
	}
	c.UnregisteredFile = fc.UnregisteredFile // must be absolute: not resolved
	if fc.StateDir != nil {
		c.StateDir = *fc.StateDir // must be absolute or "": not resolved
	}
	if fc.SpoolMaxBytes != nil {
		c.SpoolMaxBytes = *fc.SpoolMaxBytes
	}

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
	c.Metrics.Listen = fc.Metrics.Listen
	if path, ok := c.Metrics.UnixPath(); ok {
		c.Metrics.Listen = "unix:" + resolve(dir, path)
	}
	c.Socket.AllowUIDs = s.AllowUIDs
	c.Socket.AllowGIDs = s.AllowGIDs
	c.Socket.AdminUIDs = s.AdminUIDs
	c.Socket.AdminGIDs = s.AdminGIDs
	if s.MaxConnections != nil {
		c.Socket.MaxConnections = *s.MaxConnections
	}
	if s.MaxConnsPerUID != nil {
		c.Socket.MaxConnectionsPerUID = *s.MaxConnsPerUID
	}
	if s.IdleTimeout != nil {
		c.Socket.IdleTimeout = time.Duration(*s.IdleTimeout)
	}
	if s.LineTimeout != nil {
		c.Socket.LineTimeout = time.Duration(*s.LineTimeout)
	}

	for _, fa := range fc.Apps {
		a := AppConfig{Name: fa.Name, Topic: fa.Topic, DefaultEnv: fa.DefaultEnv, AllowUIDs: fa.AllowUIDs, AllowGIDs: fa.AllowGIDs}
		a.Token = fa.Token.config(dir)
		a.Sandbox = fa.Sandbox.config(apns.Sandbox, apns.SandboxURL, apns.ManageSandboxURL, dir)
		a.Production = fa.Production.config(apns.Production, apns.ProductionURL, apns.ManageProductionURL, dir)
		if a.DefaultEnv == "" {
			a.DefaultEnv = apns.Sandbox
			if a.Production != nil {
				a.DefaultEnv = apns.Production
			}
		}
		c.Apps = append(c.Apps, a)
	}
	// Each environment's client is built from its EnvConfig alone.
	for i := range c.Apps {
		for _, e := range []*EnvConfig{c.Apps[i].Sandbox, c.Apps[i].Production} {
			if e != nil {
				e.UnavailableWait = c.UnavailableWait
			}
		}
	}
	return c
}

func (ft *fileToken) config(dir string) *TokenConfig {
	if ft == nil {
		return nil
	}
	return &TokenConfig{KeyFile: resolve(dir, ft.KeyFile), KeyID: ft.KeyID, TeamID: ft.TeamID}
}

func (fe *fileEnv) config(name, endpoint, manage, dir string) *EnvConfig {
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
		Endpoint:       fe.Endpoint,
		ManageEndpoint: fe.ManageEndpoint,
		CAFile:         resolve(dir, fe.CAFile),
		Connections:    DefaultConnections,
		Token:          fe.Token.config(dir),
	}
	if e.Endpoint == "" {
		e.Endpoint = endpoint
	}
	if e.ManageEndpoint == "" {
		e.ManageEndpoint = manage
	}
	if fe.Connections != nil {
		e.Connections = *fe.Connections
	}
	return e
}

func resolve(dir, p string) string {
	p = expandCredentialsDir(p)
	if p == "" || filepath.IsAbs(p) || UsesUnsetCredentialsDir(p) {
		return p // unexpanded: left as written for Validate's message
	}
	return filepath.Join(dir, p)
}

// expandCredentialsDir replaces $CREDENTIALS_DIRECTORY or
// ${CREDENTIALS_DIRECTORY} in a file path with the directory systemd's
// LoadCredential= fills (it sets that variable for the service). When the
// variable is not set the path is left as written, and Validate says the
// variable is not set and how to set it.
func expandCredentialsDir(p string) string {
	dir := os.Getenv("CREDENTIALS_DIRECTORY")
	if dir == "" || !strings.Contains(p, "CREDENTIALS_DIRECTORY") {
		return p
	}
	p = strings.ReplaceAll(p, "${CREDENTIALS_DIRECTORY}", dir)
	return strings.ReplaceAll(p, "$CREDENTIALS_DIRECTORY", dir)
}
