package ipc

// The broadcast channel ops (Apple's channel management API, iOS 18), one
// per entry of Ops: channel_create, channel_get, channel_list,
// channel_delete.
const (
	ChannelCreate = "create"
	ChannelGet    = "get"
	ChannelList   = "list"
	ChannelDelete = "delete"
)

// ChannelRequest is a validated channel op: which app and environment, and
// for get and delete the channel; for create the storage policy name as
// given ("none" or "latest"; the backend checks it).
type ChannelRequest struct {
	Op        string // ChannelCreate, ...
	App, Env  string // Env "" means the app's default
	ChannelID string
	Storage   string
}

// ChannelBackend is implemented by a backend that manages broadcast
// channels. Channel must not block: the one answer arrives on the channel
// it returns (Apple's answer, or a refusal), exactly once.
type ChannelBackend interface {
	Channel(peer *Peer, r *ChannelRequest) <-chan *Response
}

// ChannelReport is the body of a channel op's answer.
type ChannelReport struct {
	ChannelID string `json:"channel_id,omitempty"`
	Storage   string `json:"storage,omitempty"`
	PushType  string `json:"push_type,omitempty"`
	// Channels is set (possibly empty) for channel_list.
	Channels *[]string `json:"channels,omitempty"`
	// RequestID is Apple's apns-request-id of the answer.
	RequestID string `json:"apns_request_id,omitempty"`
}

// channelOp makes the handler of the channel op named op.
func channelOp(op string) func(*Server, *Peer, *Request) pending {
	return func(s *Server, p *Peer, req *Request) pending {
		cb, ok := s.Backend.(ChannelBackend)
		if !ok {
			return answered(req.ID, ErrorResponse(Errorf(CodeUnknownOp, "this apnsd does not manage broadcast channels")))
		}
		if e := req.checkChannel(op); e != nil {
			return answered(req.ID, ErrorResponse(e))
		}
		ch := cb.Channel(p, &ChannelRequest{Op: op, App: req.App, Env: req.Env, ChannelID: req.ChannelID, Storage: req.Storage})
		return pending{id: req.ID, ch: ch}
	}
}

// checkChannel checks that a channel op carries the fields it takes and no
// send fields.
func (r *Request) checkChannel(op string) *Error {
	name := "channel_" + op
	switch r.Env {
	case "", EnvSandbox, EnvProduction:
	default:
		return Errorf(CodeBadRequest, "env must be %q or %q, not %q", EnvSandbox, EnvProduction, r.Env)
	}
	needID := op == ChannelGet || op == ChannelDelete
	switch {
	case needID && r.ChannelID == "":
		return Errorf(CodeBadRequest, "%s needs \"channel_id\"", name)
	case !needID && r.ChannelID != "":
		return Errorf(CodeBadRequest, "%s takes no \"channel_id\"", name)
	case op == ChannelCreate && r.Storage == "":
		return Errorf(CodeBadRequest, "channel_create needs \"storage\": \"none\" (no message stored) or \"latest\" (the most recent message is stored for devices that were offline)")
	case op != ChannelCreate && r.Storage != "":
		return Errorf(CodeBadRequest, "%s takes no \"storage\" (only channel_create does)", name)
	}
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"token", r.Token != ""}, {"tokens", r.Tokens != nil}, {"payload", len(r.Payload) > 0},
		{"alert", len(r.Alert) > 0}, {"badge", len(r.Badge) > 0}, {"sound", len(r.Sound) > 0},
		{"topic", r.Topic != ""}, {"push_type", r.PushType != ""}, {"priority", r.Priority != nil},
		{"expiration", r.Expiration != nil}, {"collapse_id", r.CollapseID != ""}, {"apns_id", r.ApnsID != ""},
		{"wait", r.Wait != nil},
	} {
		if f.set {
			return Errorf(CodeBadRequest, "%s takes no %q (that is a send field)", name, f.name)
		}
	}
	return nil
}
