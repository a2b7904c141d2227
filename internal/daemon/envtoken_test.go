package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/apnsd/apnsd/internal/apnstest"
	"github.com/apnsd/apnsd/internal/config"
	"github.com/apnsd/apnsd/internal/ipc"
	"github.com/apnsd/apnsd/internal/pki"
)

// [apps.production.token] overrides [apps.token]: each environment signs
// with its own key (each stand-in trusts only its environment's key), the
// status shows both key ids, and both keys hot-reload.
func TestPerEnvironmentTokenKeys(t *testing.T) {
	dir := shortTempDir(t)
	sbKey, sbP8, err := pki.NewP8Key()
	must(t, err)
	prKey, prP8, err := pki.NewP8Key()
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, "sb.p8"), sbP8, 0o600))
	must(t, os.WriteFile(filepath.Join(dir, "prod.p8"), prP8, 0o600))
	sb, err := apnstest.New(apnstest.Options{TokenKeys: tokenKeys("SANDBOXKEY", sbKey)})
	must(t, err)
	t.Cleanup(sb.Close)
	pr, err := apnstest.New(apnstest.Options{CA: sb.CA, TokenKeys: tokenKeys("PRODKEY123", prKey)})
	must(t, err)
	t.Cleanup(pr.Close)
	must(t, os.WriteFile(filepath.Join(dir, "ca.pem"), sb.CACertPEM(), 0o644))
	cfgPath := filepath.Join(dir, "apnsd.toml")
	must(t, os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
[socket]
path = %q
[[apps]]
name = "tok"
topic = "com.example.tok"
default_env = "sandbox"
  [apps.token]
  key_file = "sb.p8"
  key_id = "SANDBOXKEY"
  team_id = "TEAM123456"
  [apps.sandbox]
  endpoint = %q
  ca_file = "ca.pem"
  [apps.production]
  endpoint = %q
  ca_file = "ca.pem"
    [apps.production.token]
    key_file = "prod.p8"
    key_id = "PRODKEY123"
    team_id = "TEAM123456"
`, filepath.Join(dir, "s.sock"), sb.URL, pr.URL)), 0o644))
	cfg, err := config.Load(cfgPath)
	must(t, err)
	d := startDaemon(t, cfg, Options{watch: fastWatch})
	cn, err := (&ipc.Client{Socket: cfg.Socket.Path}).Connect(context.Background())
	must(t, err)
	defer cn.Close()
	send := func(env string) *ipc.Response {
		r, err := cn.Do(context.Background(), map[string]any{"token": "aa", "alert": "x", "env": env})
		must(t, err)
		return r
	}
	for _, env := range []string{"sandbox", "production"} {
		if r := send(env); !r.OK {
			t.Fatalf("%s: %+v", env, r)
		}
	}
	envs := d.Status().Apps[0].Envs
	if envs[0].KeyID != "SANDBOXKEY" || envs[1].KeyID != "PRODKEY123" || envs[1].Files[0] != filepath.Join(dir, "prod.p8") {
		t.Errorf("status key ids: %+v / %+v", envs[0], envs[1])
	}
	// A new production key, trusted by a new production stand-in only: the
	// watcher reloads it; sandbox keeps working with its key.
	prKey2, prP82, err := pki.NewP8Key()
	must(t, err)
	pr.Close()
	pr2, err := apnstest.New(apnstest.Options{Addr: pr.Addr(), CA: sb.CA, TokenKeys: tokenKeys("PRODKEY123", prKey2)})
	must(t, err)
	t.Cleanup(pr2.Close)
	writeAtomic(t, filepath.Join(dir, "prod.p8"), prP82)
	deadline := time.Now().Add(20 * time.Second)
	for r := send("production"); !r.OK; r = send("production") {
		if time.Now().After(deadline) {
			t.Fatalf("production never sent with its new key: %+v", r)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := send("sandbox"); !r.OK {
		t.Errorf("sandbox after the production key change: %+v", r)
	}
	// The shared app key reloads too.
	sbKey2, sbP82, err := pki.NewP8Key()
	must(t, err)
	sb.Close()
	sb2, err := apnstest.New(apnstest.Options{Addr: sb.Addr(), CA: sb.CA, TokenKeys: tokenKeys("SANDBOXKEY", sbKey2)})
	must(t, err)
	t.Cleanup(sb2.Close)
	writeAtomic(t, filepath.Join(dir, "sb.p8"), sbP82)
	deadline = time.Now().Add(20 * time.Second)
	for r := send("sandbox"); !r.OK; r = send("sandbox") {
		if time.Now().After(deadline) {
			t.Fatalf("sandbox never sent with its new key: %+v", r)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
