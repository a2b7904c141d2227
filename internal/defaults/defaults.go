package defaults

// Version is apnsd's version (apnsd -version, apnsctl version, ping and
// status). Release builds set it with
// -ldflags "-X github.com/apnsd/apnsd/internal/defaults.Version=...".
var Version = "0.1.0"

// Where apnsd reads its config and where it listens, unless told otherwise.
const (
	ConfigPath = "/etc/apnsd/apnsd.toml"
	Socket     = "/run/apnsd/apnsd.sock"
)
