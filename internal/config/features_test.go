package config

import (
	"strings"
	"testing"

	"github.com/apnsd/apnsd/internal/apns"
)

// [metrics], manage_endpoint and per-environment token keys.
func TestParseFeatureTables(t *testing.T) {
	c, err := Parse([]byte(`
[metrics]
listen = "unix:run/metrics.sock"
[[apps]]
name = "shop"
topic = "com.example.shop"
  [apps.token]
  key_file = "shared.p8"
  key_id = "SHAREDKEY1"
  team_id = "TEAMID1234"
  [apps.sandbox]
  manage_endpoint = "https://127.0.0.1:2195"
  [apps.production]
    [apps.production.token]
    key_file = "prod.p8"
    key_id = "PRODKEY123"
    team_id = "TEAMID1234"
`), "/etc/apnsd/apnsd.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Metrics.Listen != "unix:/etc/apnsd/run/metrics.sock" {
		t.Errorf("metrics.listen = %q (relative unix paths resolve against the config's directory)", c.Metrics.Listen)
	}
	a := c.App("shop")
	if a.Sandbox.ManageEndpoint != "https://127.0.0.1:2195" || a.Production.ManageEndpoint != apns.ManageProductionURL {
		t.Errorf("manage endpoints %q, %q", a.Sandbox.ManageEndpoint, a.Production.ManageEndpoint)
	}
	if tk := a.TokenFor(a.Sandbox); tk == nil || tk.KeyID != "SHAREDKEY1" {
		t.Errorf("sandbox token = %+v, want the app's", tk)
	}
	if tk := a.TokenFor(a.Production); tk == nil || tk.KeyID != "PRODKEY123" || tk.KeyFile != "/etc/apnsd/prod.p8" {
		t.Errorf("production token = %+v, want its own", tk)
	}
	if a.Production.AuthKind() != "token" {
		t.Errorf("production auth %q", a.Production.AuthKind())
	}
	if (&EnvConfig{Name: "sandbox"}).ManageURL() != apns.ManageSandboxURL || (&EnvConfig{Name: "production"}).ManageURL() != apns.ManageProductionURL {
		t.Error("ManageURL defaults")
	}
}

func TestParseFeatureErrors(t *testing.T) {
	for _, tc := range []struct{ toml, want string }{
		{"[metrics]\nlisten = \"9464\"\n" + minimal, `metrics.listen: must be "host:port"`},
		{"[metrics]\nlisten = \":9464\"\n" + minimal, `would listen on every interface`},
		{"[metrics]\nlisten = \"127.0.0.1:99999\"\n" + minimal, `invalid port`},
		{"[metrics]\nlisten = \"unix:" + strings.Repeat("x", 120) + "\"\n" + minimal, `metrics.listen: socket path is`},
		{"[metrics]\nlistne = \"x\"\n" + minimal, `did you mean "listen"?`},
		{minimal + "  manage_endpoint = \"http://x\"\n", `production.manage_endpoint: must be an https:// URL`},
		{minimal + "  manage_endpoint = \"https://api-manage-broadcast.sandbox.push.apple.com:2195\"\n", ``},
		{minimal + "  [apps.production.token]\n  key_file = \"/k.p8\"\n  key_id = \"ABCDEFGHIJ\"\n  team_id = \"ABCDEFGHIJ\"\n", `production.token: is set together with a certificate`},
		{"[[apps]]\nname = \"s\"\ntopic = \"com.x\"\n[apps.sandbox]\n[apps.sandbox.token]\nkey_file = \"/k.p8\"\nkey_id = \"short\"\nteam_id = \"ABCDEFGHIJ\"\n", `sandbox.token.key_id: must be the 10-character key id`},
		{"[[apps]]\nname = \"s\"\ntopic = \"com.x\"\n[apps.sandbox]\n", `[apps.sandbox.token]`},
	} {
		_, err := Parse([]byte(tc.toml), "apnsd.toml")
		if tc.want == "" {
			if err != nil {
				t.Errorf("%q: %v", tc.toml, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.toml, err, tc.want)
		}
	}
}
