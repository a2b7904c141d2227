package apnstest

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/apnsd/apnsd/internal/apns"
)

// API is one of Apple's HTTP/2 APIs the stand-in can answer. Options.APIs
// is a set of them (0 meaning all).
type API uint8

const (
	// APIPush is POST /3/device/<token> (api[.sandbox].push.apple.com).
	APIPush API = 1 << iota
	// APIBroadcast is POST /4/broadcasts/apps/<bundle id>, on the same
	// hosts as the push API.
	APIBroadcast
	// APIManagement is channel management, /1/apps/<bundle id>/channels
	// and /1/apps/<bundle id>/all-channels, which Apple serves on hosts of
	// its own (api-manage-broadcast[.sandbox].push.apple.com:2196/2195).
	APIManagement

	allAPIs = APIPush | APIBroadcast | APIManagement
)

func (a API) String() string {
	var parts []string
	for _, x := range []struct {
		a API
		n string
	}{{APIPush, "push"}, {APIBroadcast, "broadcast"}, {APIManagement, "management"}} {
		if a&x.a != 0 {
			parts = append(parts, x.n)
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "+")
}

// ReasonInvalidLiveActivity is what the stand-in answers (with 400) to a
// liveactivity push or a broadcast whose payload breaks Apple's Live
// Activity rules (apns.ValidateLiveActivity). It is NOT an Apple reason:
// APNs does not document checking the aps dictionary (the device does, and
// drops what it cannot decode), so the stand-in uses a name no real answer
// can be confused with. The detail is logged at debug level.
const ReasonInvalidLiveActivity = "InvalidLiveActivityPayload"

// maxStandInChannelID is the decoded length of a channel id beyond which
// the stand-in answers BadChannelId ("greater than the allowed length";
// Apple documents no number). Its own ids are 16 bytes.
const maxStandInChannelID = 64

// apiOf tells which API a path belongs to; anything not broadcast or
// management is judged by the push API's rules (which answer BadPath).
func apiOf(path string) API {
	switch {
	case strings.HasPrefix(path, "/4/"):
		return APIBroadcast
	case strings.HasPrefix(path, "/1/"):
		return APIManagement
	}
	return APIPush
}

func (s *Server) serves(a API) bool {
	apis := s.opts.APIs
	if apis == 0 {
		apis = allAPIs
	}
	return apis&a != 0
}

// checked is what validation found out about a request.
type checked struct {
	token, topic      string
	bundle, channelID string
	op                apns.ChannelOp
	policy            apns.StoragePolicy // create
	body              []byte
	status            int
	reason            string
}

func refuse(reason string) checked {
	st, ok := apns.StatusForReason(reason)
	if !ok {
		st = http.StatusBadRequest
	}
	return checked{status: st, reason: reason}
}

// commonChecks applies what the broadcast and management APIs share, in
// this order: no apns-* header twice (400 DuplicateHeaders); the
// credentials (as for a push); apns-request-id, if present, a canonical
// lowercase UUID (400 BadMessageId: Apple documents no reason of its own
// for it); the bundle id in the path has no push type suffix (400
// TopicDisallowed) and is covered by the credentials (403 TopicMismatch);
// the app has broadcast enabled (400 FeatureNotEnabled).
func (s *Server) commonChecks(r *http.Request, leaf *x509.Certificate, bundle string) (checked, bool) {
	for k, v := range r.Header {
		if len(v) > 1 && strings.HasPrefix(strings.ToLower(k), "apns-") {
			return refuse(apns.ReasonDuplicateHeaders), false
		}
	}
	uid, certTopics, _, st, why := s.authenticate(r, leaf)
	if st != 0 {
		return checked{status: st, reason: why}, false
	}
	if v := r.Header.Values("apns-request-id"); len(v) > 0 && !apns.ValidUUID(v[0]) {
		return refuse(apns.ReasonBadMessageID), false
	}
	for _, suf := range TopicSuffixes {
		if strings.HasSuffix(bundle, suf) {
			return refuse(apns.ReasonTopicDisallowed), false
		}
	}
	if s.opts.ClientCAs != nil {
		if bundle != uid && !slices.Contains(certTopics, bundle) {
			return refuse(apns.ReasonTopicMismatch), false
		}
	} else if s.opts.BundleIDs != nil && !slices.Contains(s.opts.BundleIDs, bundle) {
		return refuse(apns.ReasonTopicMismatch), false
	}
	if slices.Contains(s.opts.BroadcastDisabled, bundle) {
		return refuse(apns.ReasonFeatureNotEnabled), false
	}
	return checked{bundle: bundle}, true
}

// channelHeader checks apns-channel-id: present (400 MissingChannelId),
// base64 of at most maxStandInChannelID bytes (400 BadChannelId), and a
// channel of bundle (400 ChannelNotRegistered).
func (s *Server) channelHeader(r *http.Request, bundle string) (Channel, string) {
	id := r.Header.Get("apns-channel-id")
	if id == "" {
		return Channel{}, apns.ReasonMissingChannelID
	}
	b, err := apns.ChannelIDBytes(id)
	if err != nil || len(b) > maxStandInChannelID {
		return Channel{}, apns.ReasonBadChannelID
	}
	ch, ok := s.channels.Get(bundle, id)
	if !ok {
		return Channel{}, apns.ReasonChannelNotRegistered
	}
	return ch, ""
}

// validateBroadcast checks POST /4/broadcasts/apps/<bundle id> as Apple's
// "Sending broadcast push notification requests to APNs" describes it:
//
//  1. the method is POST (405 MethodNotAllowed) and the path exactly
//     /4/broadcasts/apps/<bundle id> (404 BadPath);
//  2. [Server.commonChecks];
//  3. apns-push-type is present (400 MissingPushType) and liveactivity,
//     in any case since Apple spells it three ways (400 InvalidPushType);
//  4. apns-channel-id: see channelHeader;
//  5. apns-priority is present and 10, 5 or 1 (400 BadPriority);
//  6. apns-expiration is present and a non-negative integer (400
//     BadExpirationDate), and 0 on a channel that stores no messages (400
//     BadExpirationDate, as Apple documents);
//  7. the body is not empty (400 PayloadEmpty), at most 5120 bytes (413
//     PayloadTooLarge), JSON (400 PayloadNotJSON) and a Live Activity
//     update or end (400 InvalidLiveActivityPayload, the stand-in's own).
//
// apns-topic is not looked at: Apple's broadcast requests have none.
func (s *Server) validateBroadcast(r *http.Request, leaf *x509.Certificate) checked {
	if r.Method != http.MethodPost {
		return refuse(apns.ReasonMethodNotAllowed)
	}
	bundle, ok := strings.CutPrefix(r.URL.Path, "/4/broadcasts/apps/")
	if !ok || bundle == "" || strings.Contains(bundle, "/") {
		return refuse(apns.ReasonBadPath)
	}
	v, ok := s.commonChecks(r, leaf, bundle)
	if !ok {
		return v
	}
	pt := r.Header.Values("apns-push-type")
	switch {
	case len(pt) == 0:
		return refuse(apns.ReasonMissingPushType)
	case !strings.EqualFold(pt[0], apns.BroadcastPushType):
		return refuse(apns.ReasonInvalidPushType)
	}
	ch, why := s.channelHeader(r, bundle)
	if why != "" {
		return refuse(why)
	}
	v.channelID = ch.ID
	switch r.Header.Get("apns-priority") {
	case "10", "5", "1":
	default:
		return refuse(apns.ReasonBadPriority)
	}
	exp := r.Header.Values("apns-expiration")
	if len(exp) == 0 || !allDigits(exp[0]) {
		return refuse(apns.ReasonBadExpirationDate)
	}
	n, err := strconv.ParseInt(exp[0], 10, 64)
	if err != nil || ch.Storage.CheckExpiration(n) != nil {
		return refuse(apns.ReasonBadExpirationDate)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBodyRead+1))
	switch {
	case err != nil || len(body) == 0:
		return refuse(apns.ReasonPayloadEmpty)
	case len(body) > apns.MaxPayloadBroadcast:
		return refuse(apns.ReasonPayloadTooLarge)
	case !json.Valid(body):
		return checked{status: http.StatusBadRequest, reason: ReasonPayloadNotJSON}
	}
	if err := apns.ValidateBroadcastLiveActivity(body); err != nil {
		s.log.Debug("apnstest: broadcast payload refused", "err", err)
		return checked{status: http.StatusBadRequest, reason: ReasonInvalidLiveActivity}
	}
	v.body = body
	return v
}

// validateManagement checks a channel management request as Apple's
// "Sending channel management requests to APNs" describes it:
//
//  1. the path is /1/apps/<bundle id>/channels or .../all-channels (404
//     BadPath); channels takes POST (create), GET (read) and DELETE, and
//     all-channels GET (list); any other method is 405 MethodNotAllowed;
//  2. [Server.commonChecks];
//  3. read and delete: apns-channel-id, see channelHeader;
//  4. create: the body is a JSON object (400 BadRequestPayload when empty
//     or unparsable) with only message-storage-policy and push-type (400
//     BadRequestParams for any other key); message-storage-policy is the
//     number 0 or 1 (400 BadRequestParams); push-type is present (400
//     MissingPushType) and LiveActivity, in any case (400
//     InvalidPushType); the app has fewer channels than the limit (400
//     CannotCreateChannelConfig).
func (s *Server) validateManagement(r *http.Request, leaf *x509.Certificate) checked {
	rest, _ := strings.CutPrefix(r.URL.Path, "/1/apps/")
	bundle, tail, ok := strings.Cut(rest, "/")
	if !strings.HasPrefix(r.URL.Path, "/1/apps/") || !ok || bundle == "" || (tail != "channels" && tail != "all-channels") {
		return refuse(apns.ReasonBadPath)
	}
	var op apns.ChannelOp
	switch {
	case tail == "all-channels" && r.Method == http.MethodGet:
		op = apns.ChannelList
	case tail == "channels" && r.Method == http.MethodPost:
		op = apns.ChannelCreate
	case tail == "channels" && r.Method == http.MethodGet:
		op = apns.ChannelGet
	case tail == "channels" && r.Method == http.MethodDelete:
		op = apns.ChannelDelete
	default:
		return refuse(apns.ReasonMethodNotAllowed)
	}
	v, ok := s.commonChecks(r, leaf, bundle)
	if !ok {
		return v
	}
	v.op = op
	switch op {
	case apns.ChannelGet, apns.ChannelDelete:
		ch, why := s.channelHeader(r, bundle)
		if why != "" {
			return refuse(why)
		}
		v.channelID = ch.ID
	case apns.ChannelCreate:
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBodyRead+1))
		if err != nil {
			return refuse(apns.ReasonBadRequestPayload)
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(body, &m) != nil || m == nil {
			return refuse(apns.ReasonBadRequestPayload)
		}
		for k := range m {
			if k != "message-storage-policy" && k != "push-type" {
				return refuse(apns.ReasonBadRequestParams)
			}
		}
		var p int
		if raw, ok := m["message-storage-policy"]; !ok || json.Unmarshal(raw, &p) != nil || !apns.StoragePolicy(p).Valid() {
			return refuse(apns.ReasonBadRequestParams)
		}
		var pt string
		raw, ok := m["push-type"]
		if !ok {
			return refuse(apns.ReasonMissingPushType)
		}
		if json.Unmarshal(raw, &pt) != nil || !strings.EqualFold(pt, apns.ChannelPushType) {
			return refuse(apns.ReasonInvalidPushType)
		}
		if s.channels.Len(bundle) >= s.channels.Max() {
			return refuse(apns.ReasonCannotCreateChannelConfig)
		}
		v.policy = apns.StoragePolicy(p)
		v.body = body
	}
	return v
}

// perform carries out a management operation that passed validation and
// that the Responder let through, and returns the answer: 201 with
// apns-channel-id (create), 200 with {"message-storage-policy","push-type"}
// (read), 204 (delete), 200 with {"channels":[...]} (list). The store is
// consulted again, atomically: a channel deleted or a limit reached by a
// concurrent request since validation is reported as Apple would.
func (s *Server) perform(v *checked, h http.Header) (Reply, []byte) {
	switch v.op {
	case apns.ChannelCreate:
		ch, err := s.channels.Create(v.bundle, v.policy)
		if err != nil {
			return Reply{Status: http.StatusBadRequest, Reason: apns.ReasonCannotCreateChannelConfig}, nil
		}
		v.channelID = ch.ID
		h.Set("apns-channel-id", ch.ID)
		return Reply{Status: http.StatusCreated}, nil
	case apns.ChannelGet:
		ch, ok := s.channels.Get(v.bundle, v.channelID)
		if !ok {
			return Reply{Status: http.StatusBadRequest, Reason: apns.ReasonChannelNotRegistered}, nil
		}
		b, _ := json.Marshal(apns.ChannelConfig{StoragePolicy: ch.Storage, PushType: apns.ChannelPushType})
		return Reply{Status: http.StatusOK}, b
	case apns.ChannelDelete:
		if !s.channels.Delete(v.bundle, v.channelID) {
			return Reply{Status: http.StatusBadRequest, Reason: apns.ReasonChannelNotRegistered}, nil
		}
		return Reply{Status: http.StatusNoContent}, nil
	case apns.ChannelList:
		b, _ := json.Marshal(struct {
			Channels []string `json:"channels"`
		}{s.channels.List(v.bundle)})
		return Reply{Status: http.StatusOK}, b
	}
	return Reply{Status: http.StatusInternalServerError, Reason: apns.ReasonInternalServerError}, nil
}

// Channel is one broadcast channel of the stand-in.
type Channel struct {
	ID       string // base64 (standard alphabet, padded), 16 random bytes
	BundleID string
	Storage  apns.StoragePolicy
	Created  time.Time
}

// ErrChannelLimit is returned by [ChannelStore.Create] when the app already
// has the maximum number of channels.
var ErrChannelLimit = errors.New("apnstest: the app has the maximum number of channels")

// ChannelStore holds broadcast channels per app (bundle id), as APNs does
// per environment: a server is one environment, so each server has a store
// of its own unless Options.Channels shares one. It is safe for concurrent
// use. Ids are random and never handed out twice, so a deleted channel
// stays unknown (Apple: "the same channel ID can't be created again").
type ChannelStore struct {
	max int

	mu   sync.Mutex
	seq  uint64
	apps map[string]map[string]storedChannel // bundle id -> channel id ->
}

type storedChannel struct {
	Channel
	seq uint64
}

// NewChannelStore returns an empty store allowing max channels per app (0
// means Apple's limit, apns.MaxChannelsPerApp).
func NewChannelStore(max int) *ChannelStore {
	if max <= 0 {
		max = apns.MaxChannelsPerApp
	}
	return &ChannelStore{max: max, apps: map[string]map[string]storedChannel{}}
}

// Max returns the per-app channel limit.
func (c *ChannelStore) Max() int { return c.max }

// Create makes a channel for bundleID, or returns ErrChannelLimit.
func (c *ChannelStore) Create(bundleID string, p apns.StoragePolicy) (Channel, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.apps[bundleID]
	if len(m) >= c.max {
		return Channel{}, ErrChannelLimit
	}
	if m == nil {
		m = map[string]storedChannel{}
		c.apps[bundleID] = m
	}
	var b [16]byte
	if _, err := io.ReadFull(rand.Reader, b[:]); err != nil {
		panic(err)
	}
	c.seq++
	ch := Channel{ID: base64.StdEncoding.EncodeToString(b[:]), BundleID: bundleID, Storage: p, Created: time.Now()}
	m[ch.ID] = storedChannel{ch, c.seq}
	return ch, nil
}

// Get returns a channel of bundleID.
func (c *ChannelStore) Get(bundleID, id string) (Channel, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	sc, ok := c.apps[bundleID][id]
	return sc.Channel, ok
}

// Delete removes a channel; false if bundleID has no such channel.
func (c *ChannelStore) Delete(bundleID, id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.apps[bundleID][id]; !ok {
		return false
	}
	delete(c.apps[bundleID], id)
	return true
}

// List returns the ids of bundleID's channels, oldest first (never nil).
func (c *ChannelStore) List(bundleID string) []string {
	c.mu.Lock()
	chs := make([]storedChannel, 0, len(c.apps[bundleID]))
	for _, sc := range c.apps[bundleID] {
		chs = append(chs, sc)
	}
	c.mu.Unlock()
	sort.Slice(chs, func(i, j int) bool { return chs[i].seq < chs[j].seq })
	ids := make([]string, len(chs))
	for i, sc := range chs {
		ids[i] = sc.ID
	}
	return ids
}

// Len returns how many channels bundleID has.
func (c *ChannelStore) Len(bundleID string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.apps[bundleID])
}

// Clear deletes every channel of every app.
func (c *ChannelStore) Clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.apps = map[string]map[string]storedChannel{}
}

// Channels returns the server's channel store.
func (s *Server) Channels() *ChannelStore { return s.channels }

// NewManagement starts a channel management server for push, as Apple runs
// one apart from the push hosts: it answers only APIManagement, on a port
// of its own, with push's CA, credentials checks, options and channel
// store, so that channels it creates are the ones push's broadcast API
// sends on. Give push Options.APIs = APIPush|APIBroadcast for the faithful
// split (a management request sent to the push server is then 404
// BadPath, as it would be at Apple). Close both when done.
func NewManagement(push *Server) (*Server, error) {
	o := push.opts
	o.CA = push.CA
	o.Addr = "127.0.0.1:0"
	o.APIs = APIManagement
	o.Channels = push.channels
	return New(o)
}
