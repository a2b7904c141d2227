package apns

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTopic(t *testing.T) {
	for _, c := range []struct{ pushType, want string }{
		{PushTypeAlert, "com.example.app"},
		{PushTypeBackground, "com.example.app"},
		{"", "com.example.app"},
		{PushTypeVoIP, "com.example.app.voip"},
		{PushTypeComplication, "com.example.app.complication"},
		{PushTypeFileProvider, "com.example.app.pushkit.fileprovider"},
		{PushTypeLocation, "com.example.app.location-query"},
		{PushTypeLiveActivity, "com.example.app.push-type.liveactivity"},
		{PushTypePushToTalk, "com.example.app.voip-ptt"},
	} {
		if got := Topic("com.example.app", c.pushType); got != c.want {
			t.Errorf("Topic(%q) = %q, want %q", c.pushType, got, c.want)
		}
	}
}

func TestAppleHostEnv(t *testing.T) {
	for _, c := range []struct {
		endpoint, env string
		ok            bool
	}{
		{ProductionURL, Production, true},
		{SandboxURL, Sandbox, true},
		{"https://API.Push.Apple.com", Production, true},
		{"https://127.0.0.1:8443", "", false},
		{"://bad", "", false},
	} {
		env, ok := AppleHostEnv(c.endpoint)
		if env != c.env || ok != c.ok {
			t.Errorf("AppleHostEnv(%q) = %q, %v; want %q, %v", c.endpoint, env, ok, c.env, c.ok)
		}
	}
}

func TestLoadRootCAs(t *testing.T) {
	if pool, err := LoadRootCAs(""); pool != nil || err != nil {
		t.Errorf("no CA file: %v, %v; want nil, nil", pool, err)
	}
	dir := t.TempDir()
	notCA := filepath.Join(dir, "not-ca.pem")
	os.WriteFile(notCA, []byte("hello"), 0o644)
	if _, err := LoadRootCAs(notCA); err == nil || !strings.Contains(err.Error(), "CA file "+notCA+": no PEM CERTIFICATE found") {
		t.Errorf("not a CA file: %v", err)
	}
	missing := filepath.Join(dir, "missing.pem")
	if _, err := LoadRootCAs(missing); err == nil || !strings.Contains(err.Error(), "CA file "+missing+": cannot read") || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing CA file: %v", err)
	}
}

func TestNewUUIDIsValidAndUnique(t *testing.T) {
	seen := map[string]bool{}
	for range 10000 {
		id := NewUUID()
		if !ValidUUID(id) || id[14] != '4' || !strings.ContainsRune("89ab", rune(id[19])) {
			t.Fatalf("NewUUID() = %q: not a lowercase version 4 UUID", id)
		}
		if seen[id] {
			t.Fatalf("NewUUID() repeated %q", id)
		}
		seen[id] = true
	}
}

func TestTokenMustBeHex(t *testing.T) {
	for tok, ok := range map[string]bool{
		strings.Repeat("ab", 32): true, strings.Repeat("AF09", 16): true,
		strings.Repeat("ag", 32): false, strings.Repeat("a ", 32): false, strings.Repeat("é", 32): false,
	} {
		n := Notification{DeviceToken: tok, Topic: "com.example.app", Payload: []byte(`{"aps":{}}`)}
		if err := n.Validate(); (err == nil) != ok {
			t.Errorf("Validate with token %q: %v, want ok=%v", tok, err, ok)
		}
	}
}
