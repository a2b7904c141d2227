package ipc

import (
	"context"
	"errors"
	"strings"
	"time"
)

// Permission is what a peer must be allowed to run an op. Server.Permit
// decides; without Permit every peer that passed Authorize may run every op.
type Permission int

const (
	// Public ops are for every program allowed on the socket.
	Public Permission = iota
	// Admin ops change or reveal the daemon's state as a whole (reload,
	// the full status); issue 12 restricts them to administrators.
	Admin
)

func (p Permission) String() string {
	if p == Admin {
		return "admin"
	}
	return "public"
}

// Op is one entry of the operations table.
type Op struct {
	Name string
	Perm Permission
	// handle runs the op and returns where its one answer will arrive. It
	// is called on the connection's reader goroutine, so it must not block:
	// a handler that waits runs in its own goroutine (see async).
	handle func(s *Server, p *Peer, req *Request) pending
	// limited, if set, is what a peer that Permit refuses gets instead of
	// forbidden (status: the minimal health answer).
	limited func(s *Server, p *Peer, req *Request) pending
}

// Ops is the table of operations, in the order the unknown-op message lists
// them. A request without "op" is a send.
var Ops = []Op{
	{Name: "send", Perm: Public, handle: (*Server).opSend},
	{Name: "ping", Perm: Public, handle: now((*Server).opPing)},
	{Name: "status", Perm: Admin, handle: async((*Server).opStatus), limited: async((*Server).opHealth)},
	{Name: "reload", Perm: Admin, handle: async((*Server).opReload)},
	// Broadcast channels (channels.go). Reading them is as public as
	// sending; creating and deleting change the app's channels for every
	// sender (deleting ends the updates of every Live Activity subscribed,
	// and Apple caps an app at 10,000), so they are admin ops.
	{Name: "channel_create", Perm: Admin, handle: channelOp(ChannelCreate)},
	{Name: "channel_get", Perm: Public, handle: channelOp(ChannelGet)},
	{Name: "channel_list", Perm: Public, handle: channelOp(ChannelList)},
	{Name: "channel_delete", Perm: Admin, handle: channelOp(ChannelDelete)},
}

var opByName = func() map[string]*Op {
	m := make(map[string]*Op, len(Ops))
	for i := range Ops {
		m[Ops[i].Name] = &Ops[i]
	}
	return m
}()

func opNames() string {
	names := make([]string, len(Ops))
	for i, op := range Ops {
		names[i] = op.Name
	}
	return strings.Join(names, ", ")
}

// now runs a handler that answers at once, on the reader goroutine: its
// answer is held encoded (a few dozen bytes) until written.
func now(h func(s *Server, p *Peer, req *Request) *Response) func(*Server, *Peer, *Request) pending {
	return func(s *Server, p *Peer, req *Request) pending { return answered(req.ID, h(s, p, req)) }
}

// async runs a handler that may block in its own goroutine.
func async(h func(s *Server, p *Peer, req *Request) *Response) func(*Server, *Peer, *Request) pending {
	return func(s *Server, p *Peer, req *Request) pending {
		ch := make(chan *Response, 1)
		go func() { ch <- h(s, p, req) }()
		return pending{id: req.ID, ch: ch}
	}
}

// opSend validates and submits right here, on the connection's reader
// goroutine; its answer channel is the backend's own, so no goroutine waits
// per notification. For "wait":false the backend's channel delivers the
// acknowledgement (queued:true once the notification is durable) instead of
// APNs' answer.
func (s *Server) opSend(p *Peer, req *Request) pending {
	send := &req.send
	if e := req.fillSend(send); e != nil {
		return answered(req.ID, ErrorResponse(e))
	}
	ch, e := s.Backend.Submit(p, send)
	id := req.ID        // its own copy of the line's bytes, not in req
	releaseRequest(req) // Submit keeps nothing of send (Backend.Submit)
	if e != nil {
		return answered(id, ErrorResponse(e))
	}
	return pending{id: id, ch: ch, recycle: ch}
}

func (s *Server) opPing(*Peer, *Request) *Response {
	return &Response{OK: true, Pong: true, Version: s.Version}
}

func (s *Server) opStatus(*Peer, *Request) *Response {
	return &Response{OK: true, Version: s.Version, StatusReport: s.Backend.Status()}
}

// opHealth is the status answer for a peer that is not an administrator:
// the version and one word for the daemon's health, nothing about its
// configuration.
func (s *Server) opHealth(*Peer, *Request) *Response {
	return &Response{OK: true, Version: s.Version, Health: Health(s.Backend.Status())}
}

// Health sums up a status report in one word: "up" when every configured
// environment has all its connections, "down" when none has any, else
// "degraded".
func Health(rep *StatusReport) string {
	all, any := true, false
	for _, a := range rep.Apps {
		for _, e := range a.Envs {
			all = all && e.State == "up"
			any = any || e.State == "up" || e.State == "degraded"
		}
	}
	switch {
	case all && any:
		return "up"
	case !any:
		return "down"
	}
	return "degraded"
}

func (s *Server) opReload(p *Peer, _ *Request) *Response {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := s.Backend.Reload(ctx, p)
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			e = Errorf(CodeReloadFailed, "%v", err)
		}
		r := ErrorResponse(e)
		r.ReloadReport = rep
		return r
	}
	return &Response{OK: true, ReloadReport: rep}
}
