package ipc

import "time"

// UnregisteredRecord is one line of the unregistered file (unregistered_file
// in the config): a device token APNs answered 410 for. It is part of
// apnsd's contract with apps, like the socket protocol: apps read the file
// to prune their token tables (it replaces the feedback service of Apple's
// old binary protocol), and apnsctl unregistered lists it.
type UnregisteredRecord struct {
	Time   time.Time `json:"time"` // when apnsd got the answer
	App    string    `json:"app"`
	Env    string    `json:"env"`
	Token  string    `json:"token"`
	Reason string    `json:"reason"`
	// Timestamp is APNs' "timestamp": milliseconds since the epoch at which
	// the token stopped being valid.
	Timestamp int64  `json:"timestamp,omitempty"`
	ApnsID    string `json:"apns_id,omitempty"`
}
