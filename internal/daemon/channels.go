package daemon

import "sync/atomic"

// channelTally is what apnsd knows of an environment's broadcast channel
// count: set by every channel_list, moved by creates and deletes made
// through apnsd. Unknown until the first list (apnsd does not list channels
// by itself: that is a request to Apple the operator did not ask for).
// Safe for concurrent use.
type channelTally struct {
	known atomic.Bool
	n     atomic.Int64
}

// set records a count learnt from a channel_list.
func (c *channelTally) set(n int) {
	c.n.Store(int64(n))
	c.known.Store(true)
}

// add moves a known count by delta (a create or delete through apnsd).
func (c *channelTally) add(delta int64) {
	if c.known.Load() {
		if v := c.n.Add(delta); v < 0 {
			c.n.Store(0)
		}
	}
}

// channelCount is the environment's channel count, if known.
func (es *envSender) channelCount() (int, bool) {
	if !es.channels.known.Load() {
		return 0, false
	}
	return int(es.channels.n.Load()), true
}
