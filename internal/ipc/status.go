package ipc

import "time"

// StatusReport is the body of a "status" answer.
type StatusReport struct {
	Started       time.Time `json:"started"`
	UptimeSeconds int64     `json:"uptime_s"`
	Socket        string    `json:"socket,omitempty"`
	Config        string    `json:"config,omitempty"`
	// Unregistered is the unregistered_file (410 answers), if configured.
	Unregistered string `json:"unregistered_file,omitempty"`
	// LastReloadError is the last config reload failure, if the last
	// reload failed; the previous config is still in use.
	LastReloadError   string      `json:"last_reload_error,omitempty"`
	LastReloadErrorAt time.Time   `json:"last_reload_error_at,omitzero"`
	LastReloadAt      time.Time   `json:"last_reload_at,omitzero"`
	Queue             QueueStatus `json:"queue"`
	Apps              []AppStatus `json:"apps"`
}

// QueueStatus counts notifications daemon-wide.
type QueueStatus struct {
	Depth    int    `json:"depth"`     // accepted, not yet on the wire
	InFlight int    `json:"in_flight"` // sent to APNs, answer pending
	Capacity int    `json:"capacity"`
	Sent     uint64 `json:"sent"`   // APNs answered 200
	Failed   uint64 `json:"failed"` // APNs refused, or could not be delivered
	Refused  uint64 `json:"refused"`
	Retries  uint64 `json:"retries"` // extra attempts made under the retry policy
	// Spool is the spool of wait:false notifications; nil without one.
	Spool *SpoolStatus `json:"spool,omitempty"`
}

// SpoolStatus describes the spool (state_dir): notifications answered
// queued:true and not yet settled with APNs.
type SpoolStatus struct {
	Dir       string `json:"dir"`
	Pending   int    `json:"pending"`    // notifications kept
	Bytes     int64  `json:"bytes"`      // their bytes (bounded by max_bytes)
	MaxBytes  int64  `json:"max_bytes"`  // spool_max_bytes
	DiskBytes int64  `json:"disk_bytes"` // segment files on disk
	Syncs     uint64 `json:"fsyncs"`     // fdatasync calls since start
	Appends   uint64 `json:"appends"`    // notifications spooled since start
}

// AppStatus describes one configured app.
type AppStatus struct {
	Name       string      `json:"name"`
	Topic      string      `json:"topic"`
	DefaultEnv string      `json:"default_env"`
	Envs       []EnvStatus `json:"envs"`
}

// EnvStatus describes one app's connection to one APNs environment.
type EnvStatus struct {
	Env         string `json:"env"`
	Endpoint    string `json:"endpoint"`
	State       string `json:"state"` // up, degraded, down
	Connections int    `json:"connections"`
	Target      int    `json:"target"`
	InFlight    int    `json:"in_flight"`
	LastConnErr string `json:"last_connection_error,omitempty"`

	Auth        string    `json:"auth"` // certificate or token
	CertSubject string    `json:"cert_subject,omitempty"`
	NotAfter    time.Time `json:"not_after,omitzero"`
	DaysLeft    *int      `json:"days_left,omitempty"`
	KeyID       string    `json:"key_id,omitempty"`
	TeamID      string    `json:"team_id,omitempty"`
	Files       []string  `json:"files,omitempty"`
	LoadedAt    time.Time `json:"loaded_at,omitzero"`

	LastReloadError   string    `json:"last_reload_error,omitempty"`
	LastReloadErrorAt time.Time `json:"last_reload_error_at,omitzero"`

	Sent   uint64 `json:"sent"`
	Failed uint64 `json:"failed"`

	// ManageEndpoint is the channel management API's URL; ManageState its
	// connection state ("idle" until the first channel op).
	ManageEndpoint string `json:"manage_endpoint,omitempty"`
	ManageState    string `json:"manage_state,omitempty"`
	// Channels is the broadcast channel count as apnsd last learnt it
	// (channel_list, then creates and deletes through apnsd); absent until
	// the first channel_list.
	Channels *int `json:"channels,omitempty"`
}

// ReloadReport is the body of a "reload" answer.
type ReloadReport struct {
	Reloaded []string `json:"reloaded,omitempty"` // what changed, e.g. "shop/sandbox: new certificate"
	Errors   []string `json:"errors,omitempty"`
}
