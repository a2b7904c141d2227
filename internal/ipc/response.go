package ipc

import "encoding/json"

// Response is one line apnsd writes back. Exactly one is written per
// request line, in request order.
type Response struct {
	ID json.RawMessage `json:"id,omitempty"`
	OK bool            `json:"ok"`

	// Answers from APNs.
	Status    int    `json:"status,omitempty"`
	Reason    string `json:"reason,omitempty"`
	ApnsID    string `json:"apns_id,omitempty"`
	Timestamp int64  `json:"timestamp,omitempty"`
	// Queued is set for a send with "wait":false that was accepted: true
	// for one token, the number of tokens queued (an int) for a multicast.
	// Decoded answers hold true or a float64.
	Queued any `json:"queued,omitempty"`

	// Refusals by apnsd.
	Error     string `json:"error,omitempty"`
	Message   string `json:"message,omitempty"`
	Retryable *bool  `json:"retryable,omitempty"`

	// Other ops.
	Pong    bool   `json:"pong,omitempty"`
	Version string `json:"version,omitempty"`
	// Health is the limited status answer for a peer that is not an
	// administrator: "up", "degraded" or "down".
	Health string `json:"health,omitempty"`
	*StatusReport
	*ReloadReport
	*MulticastReport
	*ChannelReport

	// Owner, when set, lent this Response: whoever reads the answer calls
	// Release once it no longer needs it (the server, once it has encoded
	// it), and touches it no more. A backend uses it to recycle the record
	// the Response lives in.
	Owner ResponseOwner `json:"-"`
}

// ResponseOwner is the lender of a Response (Response.Owner).
type ResponseOwner interface {
	// ResponseDone is called once, by Release, when r is no longer read.
	ResponseDone(r *Response)
}

// Release hands r back to its Owner, if it has one; r must not be used
// after. It is safe to call on any Response, more than once.
func (r *Response) Release() {
	if o := r.Owner; o != nil {
		r.Owner = nil
		o.ResponseDone(r)
	}
}

// Err rebuilds the *Error from a refusal response, or returns nil.
func (r *Response) Err() *Error {
	if r.Error == "" {
		return nil
	}
	e := &Error{Code: r.Error, Message: r.Message}
	if r.Retryable != nil {
		e.Retryable = *r.Retryable
	}
	return e
}
