package config

import (
	"strings"
	"testing"
	"time"
)

// TestUnavailableWait: unavailable_wait defaults to 3s (or request_timeout
// when that is shorter), reaches every environment, and is refused when
// not positive or longer than request_timeout, naming file and key.
func TestUnavailableWait(t *testing.T) {
	both := minimal + `  [apps.sandbox]
  cert_file = "/etc/apnsd/shop-dev.pem"
`
	for _, tt := range []struct {
		name, top string
		want      time.Duration
	}{
		{"default", "", 3 * time.Second},
		{"set", `unavailable_wait = "1500ms"`, 1500 * time.Millisecond},
		{"equal to request_timeout", "request_timeout = \"2s\"\nunavailable_wait = \"2s\"", 2 * time.Second},
		{"default lowered to a short request_timeout", `request_timeout = "400ms"`, 400 * time.Millisecond},
		{"default kept under a long request_timeout", `request_timeout = "2m"`, 3 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.top+"\n"+both), "apnsd.toml")
			if err != nil {
				t.Fatal(err)
			}
			if c.UnavailableWait != tt.want {
				t.Errorf("UnavailableWait = %v, want %v", c.UnavailableWait, tt.want)
			}
			a := c.App("shop")
			for _, e := range []*EnvConfig{a.Sandbox, a.Production} {
				if e.UnavailableWait != tt.want {
					t.Errorf("%s: UnavailableWait = %v, want %v", e.Name, e.UnavailableWait, tt.want)
				}
			}
		})
	}
	for _, tt := range []struct {
		name, top, want string
	}{
		{"zero", `unavailable_wait = "0s"`, "apnsd.toml: unavailable_wait: must be positive, got 0s"},
		{"negative", `unavailable_wait = "-1s"`, "apnsd.toml: unavailable_wait: must be positive, got -1s"},
		{"over request_timeout", "request_timeout = \"5s\"\nunavailable_wait = \"6s\"", "apnsd.toml: unavailable_wait: must be at most request_timeout (5s), got 6s"},
		{"over the default request_timeout", `unavailable_wait = "1m"`, "apnsd.toml: unavailable_wait: must be at most request_timeout (30s), got 1m0s"},
		{"bare number", `unavailable_wait = 3`, `unavailable_wait: must be a quoted Go duration such as "3s"`},
		{"not a duration", `unavailable_wait = "soon"`, `unavailable_wait: must be a Go duration such as "30s" or "1m30s", got "soon"`},
		{"typo", `unavailable_wiat = "3s"`, `unavailable_wiat: unknown key (did you mean "unavailable_wait"?)`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.top+"\n"+minimal), "apnsd.toml")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse: %v, want an error containing %q", err, tt.want)
			}
		})
	}
	// A configuration built in code is validated the same way.
	c := Default()
	c.UnavailableWait = time.Minute
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "unavailable_wait: must be at most request_timeout (30s), got 1m0s") {
		t.Errorf("Validate: %v", err)
	}
}
