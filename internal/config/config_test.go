package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apnsd/apnsd/internal/apns"
	"github.com/apnsd/apnsd/internal/pki"
)

// minimal is the smallest valid app block; tests append to or replace it.
const minimal = `
[[apps]]
name = "shop"
topic = "com.example.shop"
  [apps.production]
  cert_file = "/etc/apnsd/shop.pem"
`

func TestDefault(t *testing.T) {
	c := Default()
	want := &Config{
		RequestTimeout:  30 * time.Second,
		QueueSize:       10000,
		GCPercent:       400,
		MaxProcs:        1,
		ShutdownTimeout: 15 * time.Second,
		UnavailableWait: 3 * time.Second,
		StateDir:        "/var/lib/apnsd",
		SpoolMaxBytes:   64 << 20,
		LogLevel:        "info",
		LogFormat:       "auto",
		Socket: SocketConfig{
			Path:                 "/run/apnsd/apnsd.sock",
			Mode:                 0o660,
			MaxLineBytes:         131072,
			MaxPendingPerConn:    1024,
			MaxConnections:       512,
			MaxConnectionsPerUID: 128,
			IdleTimeout:          2 * time.Minute,
			LineTimeout:          10 * time.Second,
		},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Default() = %+v, want %+v", c, want)
	}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "no [[apps]] configured") {
		t.Errorf("Default().Validate() = %v, want the no-apps error", err)
	}
	c.Apps = []AppConfig{{Name: "a", Topic: "com.example.a", DefaultEnv: "sandbox",
		Sandbox: &EnvConfig{Name: "sandbox", Cert: apns.CertFiles{CertFile: "/c.pem"}, Endpoint: apns.SandboxURL, Connections: 1}}}
	if err := c.Validate(); err != nil {
		t.Errorf("Default() plus one app: Validate() = %v", err)
	}
}

func TestParseDefaults(t *testing.T) {
	c, err := Parse([]byte(minimal+`
[[apps]]
name = "news"
topic = "com.example.news"
  [apps.sandbox]
  cert_file = "/etc/apnsd/news.pem"
[[apps]]
name = "both"
topic = "com.example.both"
  [apps.sandbox]
  p12_file = "/etc/apnsd/both-dev.p12"
  [apps.production]
  p12_file = "/etc/apnsd/both.p12"
`), "/etc/apnsd/apnsd.toml")
	if err != nil {
		t.Fatal(err)
	}
	d := Default()
	if c.RequestTimeout != d.RequestTimeout || c.QueueSize != d.QueueSize || c.ShutdownTimeout != d.ShutdownTimeout ||
		c.LogLevel != d.LogLevel || c.LogFormat != d.LogFormat || c.UnregisteredFile != "" || !reflect.DeepEqual(c.Socket, d.Socket) {
		t.Errorf("top-level/socket defaults not applied: %+v", c)
	}
	if c.Path != "/etc/apnsd/apnsd.toml" {
		t.Errorf("Path = %q", c.Path)
	}
	tests := []struct {
		app, defEnv string
		envs        []string
	}{
		{"shop", "production", []string{"production"}},
		{"news", "sandbox", []string{"sandbox"}},
		{"both", "production", []string{"sandbox", "production"}},
	}
	for _, tt := range tests {
		a := c.App(tt.app)
		if a == nil {
			t.Fatalf("App(%q) = nil", tt.app)
		}
		if a.DefaultEnv != tt.defEnv {
			t.Errorf("%s: DefaultEnv = %q, want %q", tt.app, a.DefaultEnv, tt.defEnv)
		}
		for _, name := range []string{"sandbox", "production"} {
			e := a.Env(name)
			if !slices.Contains(tt.envs, name) {
				if e != nil {
					t.Errorf("%s: Env(%q) = %+v, want nil", tt.app, name, e)
				}
				continue
			}
			want := map[string]string{"sandbox": apns.SandboxURL, "production": apns.ProductionURL}[name]
			if e == nil || e.Name != name || e.Endpoint != want || e.Connections != 1 || e.AuthKind() != "certificate" {
				t.Errorf("%s: Env(%q) = %+v", tt.app, name, e)
			}
		}
	}
	if c.App("nope") != nil || c.Apps[0].Env("staging") != nil {
		t.Errorf("App/Env of an unknown name is not nil")
	}
}

func TestParseValues(t *testing.T) {
	c, err := Parse([]byte(`
request_timeout = "1m30s"
queue_size = 5
max_procs = 0
shutdown_timeout = "500ms"
log_level = "debug"
log_format = "journal"
unregistered_file = "/var/lib/apnsd/unregistered.jsonl"
[socket]
path = "/tmp/x.sock"
mode = "0600"
group = 123
max_line_bytes = 8192
max_pending_per_conn = 1
allow_uids = [0, 1000]
allow_gids = [4294967294]
[[apps]]
name = "Shop_2.b-c"
topic = "com.Example-1.shop"
default_env = "sandbox"
  [apps.token]
  key_file = "/k/AuthKey.p8"
  key_id = "ABCDE12345"
  team_id = "FGHIJ67890"
  [apps.sandbox]
  endpoint = "https://api.sandbox.push.apple.com:2197"
  connections = 32
  ca_file = "/ca.pem"
  [apps.production]
  p12_file = "/p.p12"
  p12_password_env = "SHOP_P12_PASS"
  endpoint = "https://127.0.0.1:8443/"
`), "apnsd.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.RequestTimeout != 90*time.Second || c.QueueSize != 5 || c.MaxProcs != 0 || c.ShutdownTimeout != 500*time.Millisecond ||
		c.LogLevel != "debug" || c.LogFormat != "journal" || c.UnregisteredFile != "/var/lib/apnsd/unregistered.jsonl" {
		t.Errorf("top level = %+v", c)
	}
	wantSock := SocketConfig{Path: "/tmp/x.sock", Mode: 0o600, Group: "123", MaxLineBytes: 8192, MaxPendingPerConn: 1,
		AllowUIDs: []int{0, 1000}, AllowGIDs: []int{4294967294},
		MaxConnections: 512, MaxConnectionsPerUID: 128, IdleTimeout: 2 * time.Minute, LineTimeout: 10 * time.Second}
	if !reflect.DeepEqual(c.Socket, wantSock) {
		t.Errorf("Socket = %+v, want %+v", c.Socket, wantSock)
	}
	a := c.App("Shop_2.b-c")
	if a == nil || a.Topic != "com.Example-1.shop" || a.DefaultEnv != "sandbox" {
		t.Fatalf("app = %+v", a)
	}
	if *a.Token != (TokenConfig{KeyFile: "/k/AuthKey.p8", KeyID: "ABCDE12345", TeamID: "FGHIJ67890"}) {
		t.Errorf("Token = %+v", a.Token)
	}
	if s := a.Sandbox; s.AuthKind() != "token" || s.Connections != 32 || s.Endpoint != "https://api.sandbox.push.apple.com:2197" || s.CAFile != "/ca.pem" {
		t.Errorf("Sandbox = %+v", s)
	}
	if p := a.Production; p.AuthKind() != "certificate" || p.Cert != (apns.CertFiles{P12File: "/p.p12", P12PasswordEnv: "SHOP_P12_PASS"}) {
		t.Errorf("Production = %+v", p)
	}
}

func TestParseErrors(t *testing.T) {
	app := func(body string) string {
		return "[[apps]]\nname = \"shop\"\ntopic = \"com.example.shop\"\n" + body
	}
	prod := func(body string) string { return app("[apps.production]\n" + body) }
	cert := "cert_file = \"/c.pem\"\n"
	tests := []struct {
		name string
		toml string
		want []string // substrings; each must appear
	}{
		{"syntax", "x = [\n", []string{"apnsd.toml: line 1:"}},
		{"unknown top-level key", "bogus = 1\n" + minimal, []string{"apnsd.toml: bogus: unknown key"}},
		{"unknown key suggestion", "queue_sise = 1\n" + minimal, []string{`apnsd.toml: queue_sise: unknown key (did you mean "queue_size"?)`}},
		{"unknown socket key", "[socket]\npaht = \"/x\"\n" + minimal, []string{`socket.paht: unknown key (did you mean "path"?)`}},
		{"unknown env key", prod(cert + "cret_file = \"/x\"\n"), []string{`apnsd.toml: apps.production.cret_file: unknown key (did you mean "cert_file"?)`}},
		{"unknown env table", app("[apps.prod]\n" + cert), []string{"apps.prod: unknown key"}},
		{"unknown token key", prod(cert) + "[apps.token]\nkey = \"x\"\n", []string{"apps.token.key: unknown key"}},
		{"several unknown keys", "a = 1\nb = 2\n" + minimal, []string{"apnsd.toml: a: unknown key", "apnsd.toml: b: unknown key"}},
		{"apps as table", "[apps]\nname = \"x\"\n", []string{"[[apps]]"}},
		{"duration bare number", "request_timeout = 30\n" + minimal, []string{"request_timeout: must be a quoted Go duration", "\"30s\""}},
		{"duration bad", "shutdown_timeout = \"soon\"\n" + minimal, []string{`shutdown_timeout: must be a Go duration such as "30s" or "1m30s", got "soon"`}},
		{"duration zero", "request_timeout = \"0s\"\n" + minimal, []string{"apnsd.toml: request_timeout: must be positive, got 0s"}},
		{"shutdown negative", "shutdown_timeout = \"-1s\"\n" + minimal, []string{"shutdown_timeout: must be positive"}},
		{"queue_size zero", "queue_size = 0\n" + minimal, []string{"queue_size: must be at least 1, got 0"}},
		{"gc_percent too low", "gc_percent = 10\n" + minimal, []string{"apnsd.toml: gc_percent: must be from 25 to 10000", "got 10"}},
		{"gc_percent too high", "gc_percent = 20000\n" + minimal, []string{"gc_percent: must be from 25 to 10000", "got 20000"}},
		{"max_procs negative", "max_procs = -1\n" + minimal, []string{"apnsd.toml: max_procs: must be from 0 to 1024", "got -1"}},
		{"max_procs too high", "max_procs = 5000\n" + minimal, []string{"max_procs: must be from 0 to 1024", "0 every CPU", "got 5000"}},
		{"queue_size string", "queue_size = \"10\"\n" + minimal, []string{"queue_size", "incompatible types"}},
		{"log_level", "log_level = \"verbose\"\n" + minimal, []string{`log_level: must be one of debug, info, warn, error, got "verbose"`}},
		{"log_format", "log_format = \"xml\"\n" + minimal, []string{`log_format: must be one of auto, text, json, journal, got "xml"`}},
		{"unregistered relative", "unregistered_file = \"gone.jsonl\"\n" + minimal, []string{`unregistered_file: must be an absolute path or empty, got "gone.jsonl"`}},
		{"state_dir relative", "state_dir = \"spool\"\n" + minimal, []string{`state_dir: must be an absolute path, or "" to refuse "wait":false sends, got "spool"`}},
		{"spool_max_bytes small", "spool_max_bytes = 1000\n" + minimal, []string{"spool_max_bytes: must be at least 1048576 (1 MiB), got 1000"}},
		{"socket path too long", "[socket]\npath = \"/" + strings.Repeat("x", 120) + "\"\n" + minimal, []string{"socket.path: is 121 bytes; a Unix socket path can have at most 107"}},
		{"socket mode bare number", "[socket]\nmode = 660\n" + minimal, []string{"socket.mode: must be a quoted string of octal digits"}},
		{"socket mode not octal", "[socket]\nmode = \"0990\"\n" + minimal, []string{`socket.mode: must be a string of octal digits such as "0660", got "0990"`}},
		{"socket mode too big", "[socket]\nmode = \"4777\"\n" + minimal, []string{"socket.mode: must be permission bits"}},
		{"socket group", "[socket]\ngroup = \"a b\"\n" + minimal, []string{`socket.group: must be a group name or a numeric gid, got "a b"`}},
		{"socket group type", "[socket]\ngroup = true\n" + minimal, []string{"socket.group: must be a group name or a numeric gid"}},
		{"max_line_bytes small", "[socket]\nmax_line_bytes = 100\n" + minimal, []string{"socket.max_line_bytes: must be between 8192 and 16777216, got 100"}},
		{"max_pending zero", "[socket]\nmax_pending_per_conn = 0\n" + minimal, []string{"socket.max_pending_per_conn: must be at least 1, got 0"}},
		{"allow_uids negative", "[socket]\nallow_uids = [1, -1]\n" + minimal, []string{"socket.allow_uids[1]: must be an id between 0 and 4294967294, got -1"}},
		{"allow_gids too big", "[socket]\nallow_gids = [4294967295]\n" + minimal, []string{"socket.allow_gids[0]: must be an id"}},
		{"no apps", "queue_size = 1\n", []string{"apnsd.toml: apps: no [[apps]] configured"}},
		{"app name", "[[apps]]\nname = \"my shop\"\ntopic = \"com.example.shop\"\n[apps.production]\n" + cert, []string{`apnsd.toml: apps[0] (name "my shop"): name: must be letters, digits, '.', '_' or '-', got "my shop"`}},
		{"app name empty", "[[apps]]\ntopic = \"com.example.shop\"\n[apps.production]\n" + cert, []string{`apnsd.toml: apps[0]: name: must be letters`}},
		{"app name duplicate", prod(cert) + prod(cert), []string{`apnsd.toml: apps[1] (name "shop"): name: duplicate: apps[0] has the same name`}},
		{"topic empty", "[[apps]]\nname = \"shop\"\n[apps.production]\n" + cert, []string{`apps[0] (name "shop"): topic: must be a bundle id`}},
		{"topic bad", "[[apps]]\nname = \"shop\"\ntopic = \"com..shop\"\n[apps.production]\n" + cert, []string{`topic: must be a bundle id (letters, digits, '-' and '.'), got "com..shop"`}},
		{"no env", app(""), []string{`apps[0] (name "shop"): no environment configured`}},
		{"default_env bad", app("default_env = \"prod\"\n[apps.production]\n" + cert), []string{`default_env: must be "sandbox" or "production", got "prod"`}},
		{"default_env not configured", app("default_env = \"sandbox\"\n[apps.production]\n" + cert), []string{`default_env: is "sandbox" but there is no [apps.sandbox]`}},
		{"connections zero", app("[apps.sandbox]\n" + cert + "connections = 0\n"), []string{`apnsd.toml: apps[0] (name "shop"): sandbox.connections: must be between 1 and 32, got 0`}},
		{"connections 33", prod(cert + "connections = 33\n"), []string{"production.connections: must be between 1 and 32, got 33"}},
		{"endpoint http", prod(cert + "endpoint = \"http://api.push.apple.com\"\n"), []string{`production.endpoint: must be an https:// URL, got "http://api.push.apple.com"`}},
		{"endpoint no host", prod(cert + "endpoint = \"https:///x\"\n"), []string{"production.endpoint: must have a host"}},
		{"endpoint path", prod(cert + "endpoint = \"https://api.push.apple.com/3/device\"\n"), []string{"production.endpoint: must be scheme, host and port only"}},
		{"endpoint port", prod(cert + "endpoint = \"https://api.push.apple.com:99999\"\n"), []string{"production.endpoint: has an invalid port"}},
		{"endpoint user", prod(cert + "endpoint = \"https://u:p@h.example\"\n"), []string{"production.endpoint: must not contain user information"}},
		{"endpoint wrong apple host", app("[apps.sandbox]\n" + cert + "endpoint = \"https://api.push.apple.com:443\"\n"), []string{"sandbox.endpoint: api.push.apple.com is Apple's production host, but this is [apps.sandbox]"}},
		{"no credential", prod("connections = 1\n"), []string{`apps[0] (name "shop"): production: no credential: set cert_file`}},
		{"cert and p12", prod(cert + "p12_file = \"/p.p12\"\n"), []string{"production.p12_file: cert_file and p12_file are both set; use one"}},
		{"key without cert", prod("key_file = \"/k.pem\"\n"), []string{"production.key_file: is set without cert_file"}},
		{"key with p12", prod("key_file = \"/k.pem\"\np12_file = \"/p.p12\"\n"), []string{"production.key_file: cannot be used with p12_file"}},
		{"p12 password file without p12", prod(cert + "p12_password_file = \"/pw\"\n"), []string{"production.p12_password_file: is set without p12_file"}},
		{"p12 password env without p12", prod(cert + "p12_password_env = \"PW\"\n"), []string{"production.p12_password_env: is set without p12_file"}},
		{"p12 two passwords", prod("p12_file = \"/p.p12\"\np12_password_file = \"/pw\"\np12_password_env = \"PW\"\n"), []string{"production.p12_password_env: p12_password_file and p12_password_env are both set"}},
		{"p12 env name", prod("p12_file = \"/p.p12\"\np12_password_env = \"MY-PASS\"\n"), []string{`production.p12_password_env: must be an environment variable name, got "MY-PASS"`}},
		{"token key_file", prod(cert) + "[apps.token]\nkey_id = \"ABCDE12345\"\nteam_id = \"FGHIJ67890\"\n", []string{"token.key_file: must be set"}},
		{"token key_id", prod(cert) + "[apps.token]\nkey_file = \"/k.p8\"\nkey_id = \"ABC\"\nteam_id = \"FGHIJ67890\"\n", []string{`token.key_id: must be the 10-character key id (letters and digits), got "ABC"`}},
		{"token team_id", prod(cert) + "[apps.token]\nkey_file = \"/k.p8\"\nkey_id = \"ABCDE12345\"\nteam_id = \"FGHIJ-7890\"\n", []string{`token.team_id: must be the 10-character team id`}},
		{"several problems at once", "queue_size = 0\n" + prod("connections = 0\n"+cert), []string{"queue_size: must be at least 1", "production.connections: must be between 1 and 32"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.toml), "apnsd.toml")
			if err == nil {
				t.Fatalf("Parse succeeded (%+v), want an error containing %q", c, tt.want)
			}
			if c != nil {
				t.Errorf("Parse returned a config with its error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %q is not ErrInvalid", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error:\n%v\ndoes not contain:\n%s", err, w)
				}
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "apnsd.toml: ") {
					t.Errorf("error line %q does not name the file", line)
				}
			}
		})
	}
}

func TestFieldErrorFormat(t *testing.T) {
	e := &FieldError{File: "apnsd.toml", App: 1, AppName: "shop", Field: "sandbox.connections", Msg: "must be between 1 and 32, got 0"}
	if got, want := e.Error(), `apnsd.toml: apps[1] (name "shop"): sandbox.connections: must be between 1 and 32, got 0`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(e, ErrInvalid) {
		t.Errorf("FieldError is not ErrInvalid")
	}
}

func TestValidateProgrammatic(t *testing.T) {
	// Validate works on a Config built in code (no Path: messages start with the field).
	c := Default()
	c.Socket.Path = "relative.sock"
	c.Socket.Mode = 0o1777
	c.Apps = []AppConfig{{Name: "a", Topic: "com.example.a", DefaultEnv: "sandbox",
		Sandbox: &EnvConfig{Name: "production", Cert: apns.CertFiles{CertFile: "/c.pem"}, Endpoint: apns.SandboxURL, Connections: 1}}}
	err := c.Validate()
	for _, w := range []string{
		`socket.path: must be an absolute path, got "relative.sock"`,
		"socket.mode: must be permission bits between 0000 and 0777, got 01777",
		`apps[0] (name "a"): sandbox: EnvConfig.Name is "production", want "sandbox"`,
	} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Validate() = %v, want it to contain %q", err, w)
		}
	}
}

func TestLoadRelativePaths(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "etc")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(sub, "apnsd.toml")
	data := `
[socket]
path = "run/apnsd.sock"
[[apps]]
name = "shop"
topic = "com.example.shop"
  [apps.token]
  key_file = "keys/AuthKey.p8"
  key_id = "ABCDE12345"
  team_id = "FGHIJ67890"
  [apps.sandbox]
  cert_file = "certs/dev.pem"
  key_file = "../dev.key"
  ca_file = "ca.pem"
  [apps.production]
  p12_file = "prod.p12"
  p12_password_file = "/abs/pw"
`
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	j := func(p string) string { return filepath.Join(sub, p) }
	if c.Path != path {
		t.Errorf("Path = %q, want %q", c.Path, path)
	}
	if c.Socket.Path != j("run/apnsd.sock") {
		t.Errorf("socket path = %q", c.Socket.Path)
	}
	a := c.App("shop")
	if a.Token.KeyFile != j("keys/AuthKey.p8") {
		t.Errorf("token key_file = %q", a.Token.KeyFile)
	}
	if got, want := a.Sandbox.Cert, (apns.CertFiles{CertFile: j("certs/dev.pem"), KeyFile: filepath.Join(dir, "dev.key")}); got != want {
		t.Errorf("sandbox cert = %+v, want %+v", got, want)
	}
	if a.Sandbox.CAFile != j("ca.pem") {
		t.Errorf("ca_file = %q", a.Sandbox.CAFile)
	}
	if got, want := a.Production.Cert, (apns.CertFiles{P12File: j("prod.p12"), P12PasswordFile: "/abs/pw"}); got != want {
		t.Errorf("production cert = %+v, want %+v", got, want)
	}

	t.Run("missing file", func(t *testing.T) {
		_, err := Load(filepath.Join(dir, "nope.toml"))
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "nope.toml") {
			t.Errorf("Load(missing) = %v, want fs.ErrNotExist naming the file", err)
		}
	})
	t.Run("errors name the path", func(t *testing.T) {
		bad := filepath.Join(dir, "bad.toml")
		if err := os.WriteFile(bad, []byte("queue_size = 0\n"+minimal), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Load(bad)
		if err == nil || !strings.HasPrefix(err.Error(), bad+": queue_size:") {
			t.Errorf("Load(bad) = %v, want it to start with %q", err, bad+": queue_size:")
		}
	})
}

func TestExampleFile(t *testing.T) {
	const path = "../../apnsd.toml.example"
	c, err := Load(path)
	if err != nil {
		t.Fatalf("the example does not load: %v", err)
	}
	// The example documents the defaults: its values must be them.
	d := Default()
	if c.RequestTimeout != d.RequestTimeout || c.QueueSize != d.QueueSize || c.ShutdownTimeout != d.ShutdownTimeout ||
		c.LogLevel != d.LogLevel || c.LogFormat != d.LogFormat || c.UnregisteredFile != "" ||
		c.StateDir != d.StateDir || c.SpoolMaxBytes != d.SpoolMaxBytes || c.UnavailableWait != d.UnavailableWait ||
		c.GCPercent != d.GCPercent || c.MaxProcs != d.MaxProcs {
		t.Errorf("example top-level values differ from Default(): %+v", c)
	}
	s := c.Socket
	if s.Path != d.Socket.Path || s.Mode != d.Socket.Mode || s.Group != "" || s.MaxLineBytes != d.Socket.MaxLineBytes ||
		s.MaxPendingPerConn != d.Socket.MaxPendingPerConn || len(s.AllowUIDs) != 0 || len(s.AllowGIDs) != 0 {
		t.Errorf("example socket differs from Default(): %+v", s)
	}
	a := c.App("shop")
	if a == nil || a.Production == nil || a.Production.Endpoint != apns.ProductionURL || a.Production.Connections != DefaultConnections {
		t.Fatalf("example app = %+v", a)
	}
	abs, _ := filepath.Abs("../..")
	if a.Production.Cert.CertFile != filepath.Join(abs, "shop-production.pem") {
		t.Errorf("example cert_file resolved to %q", a.Production.Cert.CertFile)
	}

	// Uncommenting the optional blocks gives a valid configuration too.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		if m := commentedKey.FindStringSubmatch(line); m != nil {
			line = m[1]
		}
		b.WriteString(line + "\n")
	}
	full, err := Parse([]byte(b.String()), "/etc/apnsd/apnsd.toml")
	if err != nil {
		t.Fatalf("the example with its optional blocks uncommented does not parse: %v\n%s", err, b.String())
	}
	fa := full.App("shop")
	if fa.Token == nil || fa.Sandbox == nil || fa.Sandbox.Cert.CertFile != "/etc/apnsd/shop-sandbox-cert.pem" {
		t.Errorf("uncommented example: app = %+v", fa)
	}
}

var commentedKey = regexp.MustCompile(`^\s*#\s+(\[apps\.[a-z]+\]|[a-z0-9_]+ = .*)$`)

func TestCheckFiles(t *testing.T) {
	ca, err := pki.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	issue := func(o pki.PushCertOptions, certName, keyName string) {
		t.Helper()
		i, err := ca.PushCert(o)
		if err != nil {
			t.Fatal(err)
		}
		k := ""
		if keyName != "" {
			k = filepath.Join(dir, keyName)
		}
		if err := i.WriteFiles(filepath.Join(dir, certName), k); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	issue(pki.PushCertOptions{Topic: "com.example.good", Production: true}, "good-prod.pem", "")
	issue(pki.PushCertOptions{Topic: "com.example.good"}, "good-dev.pem", "good-dev.key")
	issue(pki.PushCertOptions{Topic: "com.example.bad", NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-24 * time.Hour)}, "expired.pem", "")
	issue(pki.PushCertOptions{Topic: "com.example.other", Production: true}, "other-topic.pem", "")
	issue(pki.PushCertOptions{Topic: "com.example.bad"}, "dev-only.pem", "")
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "not-ca.pem"), []byte("nothing here"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, p8, err := pki.NewP8Key()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "AuthKey.p8"), p8, 0o600); err != nil {
		t.Fatal(err)
	}
	// A key for the wrong certificate.
	if err := os.WriteFile(filepath.Join(dir, "wrong.key"), p8, 0o600); err != nil {
		t.Fatal(err)
	}

	good := `
[[apps]]
name = "good"
topic = "com.example.good"
  [apps.token]
  key_file = "AuthKey.p8"
  key_id = "ABCDE12345"
  team_id = "FGHIJ67890"
  [apps.sandbox]
  cert_file = "good-dev.pem"
  key_file = "good-dev.key"
  ca_file = "ca.pem"
  [apps.production]
  cert_file = "good-prod.pem"
[[apps]]
name = "tok"
topic = "com.example.tok"
  [apps.token]
  key_file = "AuthKey.p8"
  key_id = "ABCDE12345"
  team_id = "FGHIJ67890"
  [apps.production]
`
	path := filepath.Join(dir, "apnsd.toml")
	write := func(s string) *Config {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if err := write(good).CheckFiles(now); err != nil {
		t.Errorf("CheckFiles on a good configuration: %v", err)
	}

	bad := `
[[apps]]
name = "bad"
topic = "com.example.bad"
  [apps.sandbox]
  cert_file = "expired.pem"
  ca_file = "not-ca.pem"
  [apps.production]
  cert_file = "good-prod.pem"
  key_file = "missing.key"
[[apps]]
name = "mixed"
topic = "com.example.good"
  [apps.token]
  key_file = "ca.pem"
  key_id = "ABCDE12345"
  team_id = "FGHIJ67890"
  [apps.sandbox]
  cert_file = "good-dev.pem"
  key_file = "wrong.key"
  [apps.production]
[[apps]]
name = "topic"
topic = "com.example.good"
  [apps.production]
  cert_file = "other-topic.pem"
[[apps]]
name = "envmix"
topic = "com.example.bad"
  [apps.production]
  cert_file = "dev-only.pem"
[[apps]]
name = "p12"
topic = "com.example.bad"
  [apps.production]
  p12_file = "nope.p12"
`
	err = write(bad).CheckFiles(now)
	if err == nil {
		t.Fatal("CheckFiles on a bad configuration: nil error")
	}
	t.Logf("CheckFiles:\n%v", err)
	f := func(name string) string { return filepath.Join(dir, name) }
	want := []string{
		path + `: apps[0] (name "bad"): sandbox.cert_file: certificate ` + f("expired.pem") + ": expired on ",
		path + `: apps[0] (name "bad"): sandbox.ca_file: CA file ` + f("not-ca.pem") + ": no PEM CERTIFICATE found",
		path + `: apps[0] (name "bad"): production.key_file: key ` + f("missing.key") + ": cannot read",
		path + `: apps[1] (name "mixed"): sandbox.key_file: key ` + f("wrong.key") + " does not match certificate " + f("good-dev.pem"),
		path + `: apps[1] (name "mixed"): token.key_file: token key ` + f("ca.pem") + `: no private key PEM block found (the file holds: CERTIFICATE)`,
		path + `: apps[2] (name "topic"): production.cert_file: certificate ` + f("other-topic.pem") + ` is for com.example.other, not the app's topic "com.example.good"`,
		path + `: apps[3] (name "envmix"): production.cert_file: certificate ` + f("dev-only.pem") + " is a sandbox certificate but the endpoint api.push.apple.com:443 is Apple's production host",
		path + `: apps[4] (name "p12"): production.p12_file: p12 ` + f("nope.p12") + ": cannot read",
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("CheckFiles error does not contain:\n%s", w)
		}
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != len(want) {
		t.Errorf("CheckFiles reported %d problems, want %d", n, len(want))
	}
	for _, target := range []error{ErrInvalid, apns.ErrCertExpired, apns.ErrKeyMismatch, apns.ErrUnreadable, fs.ErrNotExist} {
		if !errors.Is(err, target) {
			t.Errorf("CheckFiles error is not %v", target)
		}
	}
}

func TestCredentialsDirectoryExpansion(t *testing.T) {
	t.Setenv("CREDENTIALS_DIRECTORY", "/run/credentials/apnsd.service")
	c, err := Parse([]byte(`
[[apps]]
name = "shop"
topic = "com.example.shop"
  [apps.production]
  p12_file = "${CREDENTIALS_DIRECTORY}/shop.p12"
  p12_password_file = "$CREDENTIALS_DIRECTORY/shop.pass"
`), "/etc/apnsd/apnsd.toml")
	if err != nil {
		t.Fatal(err)
	}
	got := c.Apps[0].Production.Cert
	if got.P12File != "/run/credentials/apnsd.service/shop.p12" || got.P12PasswordFile != "/run/credentials/apnsd.service/shop.pass" {
		t.Errorf("got %+v", got)
	}
}

func TestCredentialsDirectoryUnset(t *testing.T) {
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	_, err := Parse([]byte(`
[[apps]]
name = "shop"
topic = "com.example.shop"
  [apps.production]
  cert_file = "${CREDENTIALS_DIRECTORY}/shop.pem"
`), "/etc/apnsd/apnsd.toml")
	if err == nil {
		t.Fatal("want an error")
	}
	msg := err.Error()
	if strings.Contains(msg, "/etc/apnsd/${CREDENTIALS_DIRECTORY}") || !strings.Contains(msg, "production.cert_file") ||
		!strings.Contains(msg, "which is not set") || !strings.Contains(msg, "CREDENTIALS_DIRECTORY=") {
		t.Errorf("error %q: want it to say the variable is not set and how to set it, with the path as written", msg)
	}
}

func TestWarnings(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfgText := fmt.Sprintf(`unregistered_file = "/var/log/apnsd/u.jsonl"
[[apps]]
name = "a"
topic = "com.example.a"
  [apps.token]
  key_file = %q
  key_id = "ABCDE12345"
  team_id = "FGHIJ67890"
  [apps.sandbox]
  cert_file = %q
  key_file = %q
  [apps.production]
  cert_file = %q
`, write("AuthKey.p8", 0o660), write("public.pem", 0o644), write("private.key", 0o600), write("combined.pem", 0o640))
	c, err := Parse([]byte(cfgText), filepath.Join(dir, "apnsd.toml"))
	if err != nil {
		t.Fatal(err)
	}
	w := strings.Join(c.Warnings(), "\n")
	for _, want := range []string{"token.key_file: " + filepath.Join(dir, "AuthKey.p8") + " is mode 0660", "production.cert_file: " + filepath.Join(dir, "combined.pem") + " is mode 0640", "/var/log/apnsd/u.jsonl is outside /var/lib/apnsd"} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings lack %q:\n%s", want, w)
		}
	}
	for _, not := range []string{"public.pem", "private.key"} {
		if strings.Contains(w, not) {
			t.Errorf("warning about %s (a certificate, or an owner-only key):\n%s", not, w)
		}
	}
	c.UnregisteredFile = "/var/lib/apnsd/unregistered.jsonl"
	if w := strings.Join(c.Warnings(), "\n"); strings.Contains(w, "unregistered_file") {
		t.Errorf("warning for a file under /var/lib/apnsd: %s", w)
	}
}
