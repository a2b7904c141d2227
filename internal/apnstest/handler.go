package apnstest

import (
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/apnsd/apnsd/internal/apns"
	"github.com/apnsd/apnsd/internal/pki"
)

// ReasonPayloadNotJSON is what the server answers (with 400) to a body that
// is not valid JSON. It is NOT one of Apple's documented reasons: Apple does
// not document what it answers to a malformed payload, so the stand-in uses
// a name no real APNs answer can be confused with.
const ReasonPayloadNotJSON = "PayloadNotJSON"

// maxBodyRead bounds how much of a body is read; anything over the APNs
// limits is refused with 413 anyway.
const maxBodyRead = 64 << 10

// TopicSuffixes are the suffixes Apple appends to a bundle id to make the
// topic of a push type (".voip" for voip, ".complication" for complication,
// and so on).
var TopicSuffixes = []string{
	".voip", ".complication", ".pushkit.fileprovider", ".location-query",
	".push-type.liveactivity", ".voip-ptt",
}

// ServeHTTP answers one request. A path under /4/ is a broadcast (checked
// by validateBroadcast), one under /1/ a channel management request
// (validateManagement); both answer 404 BadPath when Options.APIs leaves
// their API out. Every other request is a push, and its checks run in this
// order, the first failure deciding the answer (status, {"reason": ...}):
//
//  1. method is POST, else 405 MethodNotAllowed;
//  2. path is /3/device/<token>: /3/device or /3/device/ is
//     400 MissingDeviceToken, any other path 404 BadPath;
//  3. token is non-empty, even-length hex, else 400 BadDeviceToken;
//  4. no apns-* header appears twice, else 400 DuplicateHeaders;
//  5. token mode only: "authorization: bearer <jwt>" present, else 403
//     MissingProviderToken, and accepted by Options.VerifyToken (the
//     reason it returns, with Apple's status for it);
//  6. certificate mode only: the client certificate looks like a push
//     certificate (has a subject UID or the topics extension), else 403
//     BadCertificate;
//  7. apns-id, if present, is a canonical lowercase UUID, else 400
//     BadMessageId;
//  8. apns-topic is present when required (token mode, or a certificate with
//     the topics extension), else 400 MissingTopic; in certificate mode
//     it is one the certificate covers, else 400 TopicDisallowed (see
//     [TopicAllowed]);
//  9. apns-push-type, if present, is one of apns.PushTypes, else 400
//     InvalidPushType;
//  10. apns-priority, if present, is 10, 5 or 1, and not 10 with push type
//     background, else 400 BadPriority;
//  11. apns-expiration, if present, is a non-negative integer (decimal
//     digits only), else 400 BadExpirationDate;
//  12. apns-collapse-id is at most 64 bytes, else 400 BadCollapseId;
//  13. the body is not empty (400 PayloadEmpty), not over 4096 bytes, or
//     5120 for push type voip (413 PayloadTooLarge), and valid JSON (400
//     [ReasonPayloadNotJSON], not an Apple reason);
//  14. push type liveactivity only: the topic ends with
//     ".push-type.liveactivity" (400 BadTopic), apns-priority is not 1
//     (400 BadPriority: Apple says 5 or 10), and the payload follows
//     Apple's Live Activity rules, apns.ValidateLiveActivity (400
//     [ReasonInvalidLiveActivity], not an Apple reason).
//
// Only then is the Responder consulted, and its [Reply] carried out (Delay,
// then Action or the answer). For a management request a 200 Reply (or
// Status 0) means "carry out the operation", whose result is the answer
// (201, 200 with a body, 204, or the refusal a concurrent change caused);
// any other Reply is answered instead and changes nothing. Every push
// answer carries an apns-id header (the request's, if it sent a valid one,
// else a fresh UUID); broadcast and management answers carry apns-request-id
// the same way. A request that is
// not to be answered (ActionCloseConn, ActionResetStream, a Delay cut short)
// ends with panic(http.ErrAbortHandler), the usual way to abort a response.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	received := time.Now()
	ci, _ := r.Context().Value(connKey{}).(*connInfo)
	if ci != nil {
		s.mu.Lock()
		s.numberLocked(ci) // normally done already by connState
		s.count++
		s.mu.Unlock()
		n := int(ci.inFlight.Add(1))
		defer ci.inFlight.Add(-1)
		s.mu.Lock()
		if n > s.maxConcurrent {
			s.maxConcurrent = n
		}
		s.mu.Unlock()
	} else {
		s.mu.Lock()
		s.count++
		s.mu.Unlock()
	}

	api := apiOf(r.URL.Path)
	idHeader := "apns-id"
	if api != APIPush {
		idHeader = "apns-request-id"
	}
	apnsID := r.Header.Get(idHeader)
	if !apns.ValidUUID(apnsID) || len(r.Header.Values(idHeader)) != 1 {
		apnsID = newUUID()
	}
	var leaf *x509.Certificate
	tlsState := r.TLS // nil when served by serveConn: the TLS state is ci's
	if tlsState == nil && ci != nil {
		tlsState = ci.tls
	}
	if tlsState != nil && len(tlsState.PeerCertificates) > 0 {
		leaf = tlsState.PeerCertificates[0]
	}

	var v checked
	switch {
	case !s.serves(api):
		v = checked{status: http.StatusNotFound, reason: apns.ReasonBadPath}
	case api == APIBroadcast:
		v = s.validateBroadcast(r, leaf)
	case api == APIManagement:
		v = s.validateManagement(r, leaf)
	default:
		v.token, v.topic, v.body, v.status, v.reason = s.validate(r, leaf)
	}
	token, topic, body, status, reason := v.token, v.topic, v.body, v.status, v.reason
	var connID uint64
	if ci != nil {
		s.mu.Lock()
		connID = ci.id
		s.mu.Unlock()
	}
	if status != 0 {
		s.log.Debug("apnstest: refused", "conn", connID, "path", r.URL.Path, "status", status, "reason", reason)
		s.answer(w, idHeader, apnsID, Reply{Status: status, Reason: reason}, nil)
		return
	}

	req := Request{
		Method:      r.Method,
		Path:        r.URL.Path,
		DeviceToken: token,
		Topic:       topic,
		Header:      r.Header.Clone(),
		Body:        body,
		ClientCert:  leaf,
		ConnID:      connID,
		ApnsID:      apnsID,
		Received:    received,
		API:         api,
		BundleID:    v.bundle,
		ChannelID:   v.channelID,
		ChannelOp:   v.op,
	}
	s.mu.Lock()
	reqIdx := len(s.requests)
	s.requests = append(s.requests, req)
	s.mu.Unlock()

	rep := Reply{Status: http.StatusOK}
	if f := s.responder.Load(); f != nil {
		rq := req
		rq.Header = req.Header.Clone()
		rep = (*f)(&rq)
	}
	if rep.Status == 0 {
		rep.Status = http.StatusOK
	}
	if rep.Delay > 0 {
		t := time.NewTimer(rep.Delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			s.log.Debug("apnstest: cancelled while delaying", "conn", connID, "apns_id", apnsID)
			s.noteUnanswered()
			// Abort rather than return: returning would make the server
			// answer an empty 200 if the stream is still open (as it is
			// when only the server's context was cancelled).
			panic(http.ErrAbortHandler)
		}
	}
	switch rep.Action {
	case ActionCloseConn:
		s.log.Debug("apnstest: closing the connection instead of answering", "conn", connID, "apns_id", apnsID)
		s.noteUnanswered()
		if ci != nil {
			ci.closeAbruptly()
		}
		panic(http.ErrAbortHandler)
	case ActionResetStream:
		s.log.Debug("apnstest: refusing the stream", "conn", connID, "apns_id", apnsID)
		s.noteUnanswered()
		if ci != nil {
			ci.refusals.Add(1) // the wire turns the abort's RST_STREAM into REFUSED_STREAM
		}
		panic(http.ErrAbortHandler)
	case ActionGoAway:
		if ci != nil {
			s.log.Debug("apnstest: GOAWAY", "conn", connID, "reason", rep.Reason)
			ci.goAway(rep.Reason)
			// Answer only once the GOAWAY is on the wire, so that a client
			// has seen it by the time it reads this answer.
			select {
			case <-ci.goAwaySent:
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}
	}
	var okBody []byte
	if api == APIManagement && rep.Status == http.StatusOK {
		// Carry out the operation; its result is the answer.
		rep, okBody = s.perform(&v, w.Header())
		if v.op == apns.ChannelCreate && v.channelID != "" {
			s.mu.Lock()
			if reqIdx < len(s.requests) && s.requests[reqIdx].ApnsID == apnsID {
				s.requests[reqIdx].ChannelID = v.channelID // the channel just created
			}
			s.mu.Unlock()
		}
	}
	if rep.Status == http.StatusOK && (ci == nil || ci.wire == nil) {
		// Not served by this Server (ServeHTTP mounted elsewhere): count
		// here. Otherwise the wire counts a 200 once it is written.
		s.mu.Lock()
		s.accepted++
		s.mu.Unlock()
	}
	s.log.Debug("apnstest: answered", "conn", connID, "token", token, "topic", topic,
		"apns_id", apnsID, "status", rep.Status, "reason", rep.Reason)
	s.answer(w, idHeader, apnsID, rep, okBody)
}

func (s *Server) noteUnanswered() {
	s.mu.Lock()
	s.unanswered++
	s.mu.Unlock()
}

// answer writes rep: the id header (apns-id for a push, apns-request-id for
// the broadcast and management APIs), the status and, for an error, the
// JSON body. Apple sends an empty body with 200 to a push or a broadcast;
// a management success carries okBody (from perform).
func (s *Server) answer(w http.ResponseWriter, idHeader, apnsID string, rep Reply, okBody []byte) {
	h := w.Header()
	h.Set(idHeader, apnsID)
	if rep.Status < 300 {
		if okBody != nil {
			h.Set("content-type", "application/json")
			h.Set("content-length", strconv.Itoa(len(okBody)))
		}
		w.WriteHeader(rep.Status)
		w.Write(okBody)
		return
	}
	var b []byte
	if rep.Timestamp != 0 {
		b, _ = json.Marshal(struct {
			Reason    string `json:"reason"`
			Timestamp int64  `json:"timestamp"`
		}{rep.Reason, rep.Timestamp})
	} else {
		b, _ = json.Marshal(struct {
			Reason string `json:"reason"`
		}{rep.Reason})
	}
	h.Set("content-type", "application/json")
	h.Set("content-length", strconv.Itoa(len(b)))
	w.WriteHeader(rep.Status)
	w.Write(b)
}

func fail(reason string) (string, string, []byte, int, string) {
	st, ok := apns.StatusForReason(reason)
	if !ok {
		st = http.StatusBadRequest
	}
	return "", "", nil, st, reason
}

// validate applies the checks listed on ServeHTTP. status 0 means valid.
func (s *Server) validate(r *http.Request, leaf *x509.Certificate) (token, topic string, body []byte, status int, reason string) {
	if r.Method != http.MethodPost {
		return fail(apns.ReasonMethodNotAllowed)
	}
	const prefix = "/3/device/"
	p := r.URL.Path
	switch {
	case p == "/3/device" || p == prefix:
		return fail(apns.ReasonMissingDeviceToken)
	case !strings.HasPrefix(p, prefix) || strings.Contains(p[len(prefix):], "/"):
		return fail(apns.ReasonBadPath)
	}
	token = p[len(prefix):]
	if len(token)%2 != 0 {
		return fail(apns.ReasonBadDeviceToken)
	}
	if _, err := hex.DecodeString(token); err != nil {
		return fail(apns.ReasonBadDeviceToken)
	}
	for k, v := range r.Header {
		if len(v) > 1 && strings.HasPrefix(strings.ToLower(k), "apns-") {
			return fail(apns.ReasonDuplicateHeaders)
		}
	}

	uid, certTopics, hasTopicsExt, st, why := s.authenticate(r, leaf)
	if st != 0 {
		return "", "", nil, st, why
	}

	if v := r.Header.Values("apns-id"); len(v) > 0 && !apns.ValidUUID(v[0]) {
		return fail(apns.ReasonBadMessageID)
	}

	topic = r.Header.Get("apns-topic")
	if topic == "" {
		if s.opts.ClientCAs == nil || hasTopicsExt || uid == "" {
			return fail(apns.ReasonMissingTopic)
		}
		topic = uid
	}
	if s.opts.ClientCAs != nil && !TopicAllowed(topic, uid, certTopics) {
		return fail(apns.ReasonTopicDisallowed)
	}

	pushType := ""
	if v := r.Header.Values("apns-push-type"); len(v) > 0 {
		pushType = v[0]
		if !apns.ValidPushType(pushType) {
			return fail(apns.ReasonInvalidPushType)
		}
	}
	if v := r.Header.Values("apns-priority"); len(v) > 0 {
		switch v[0] {
		case "10", "5", "1":
		default:
			return fail(apns.ReasonBadPriority)
		}
		// Apple: background pushes must use priority 5. Only an explicit
		// 10 is refused (as apns.Notification.Validate does); a missing
		// header is let through.
		if pushType == apns.PushTypeBackground && v[0] == "10" {
			return fail(apns.ReasonBadPriority)
		}
	}
	if v := r.Header.Values("apns-expiration"); len(v) > 0 {
		if !allDigits(v[0]) {
			return fail(apns.ReasonBadExpirationDate)
		}
		if _, err := strconv.ParseInt(v[0], 10, 64); err != nil {
			return fail(apns.ReasonBadExpirationDate)
		}
	}
	if len(r.Header.Get("apns-collapse-id")) > apns.MaxCollapseID {
		return fail(apns.ReasonBadCollapseID)
	}

	body, err := io.ReadAll(io.LimitReader(r.Body, maxBodyRead+1))
	if err != nil {
		// The client went away mid-body; nobody will read the answer.
		return fail(apns.ReasonPayloadEmpty)
	}
	switch {
	case len(body) == 0:
		return fail(apns.ReasonPayloadEmpty)
	case len(body) > apns.MaxPayloadFor(pushType):
		return fail(apns.ReasonPayloadTooLarge)
	case !json.Valid(body):
		return "", "", nil, http.StatusBadRequest, ReasonPayloadNotJSON
	}
	if pushType == apns.PushTypeLiveActivity {
		if !strings.HasSuffix(topic, apns.LiveActivityTopicSuffix) {
			return fail(apns.ReasonBadTopic)
		}
		if r.Header.Get("apns-priority") == "1" {
			return fail(apns.ReasonBadPriority)
		}
		if err := apns.ValidateLiveActivity(body); err != nil {
			s.log.Debug("apnstest: Live Activity payload refused", "err", err)
			return "", "", nil, http.StatusBadRequest, ReasonInvalidLiveActivity
		}
	}
	return token, topic, body, 0, ""
}

// authenticate applies the credential checks every API shares (steps 5 and
// 6 of ServeHTTP's list). In certificate mode it returns the certificate's
// subject UID and topics extension. status 0 means authenticated.
func (s *Server) authenticate(r *http.Request, leaf *x509.Certificate) (uid string, certTopics []string, hasTopicsExt bool, status int, reason string) {
	if s.opts.ClientCAs == nil {
		// Token mode: Apple ignores client certificates here (none is asked
		// for) and requires a provider token.
		auth := r.Header.Get("authorization")
		if auth == "" {
			return "", nil, false, http.StatusForbidden, apns.ReasonMissingProviderToken
		}
		scheme, jwt, ok := strings.Cut(auth, " ")
		if !ok || !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(jwt) == "" {
			return "", nil, false, http.StatusForbidden, apns.ReasonInvalidProviderToken
		}
		if s.verify != nil {
			if why := s.verify(strings.TrimSpace(jwt)); why != "" {
				st, ok := apns.StatusForReason(why)
				if !ok {
					st = http.StatusForbidden
				}
				return "", nil, false, st, why
			}
		}
		return "", nil, false, 0, ""
	}
	if leaf == nil { // cannot happen with RequireAndVerifyClientCert
		return "", nil, false, http.StatusForbidden, apns.ReasonBadCertificate
	}
	uid = CertUID(leaf)
	certTopics, hasTopicsExt = CertTopics(leaf)
	if uid == "" && !hasTopicsExt {
		return "", nil, false, http.StatusForbidden, apns.ReasonBadCertificate
	}
	return uid, certTopics, hasTopicsExt, 0, ""
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// TopicAllowed reports whether a push certificate with subject UID uid and
// topics extension entries extTopics may send to topic.
//
// Apple documents that a certificate's topics are its bundle id (subject UID)
// and, for multi-topic certificates, those listed in the topics extension
// (1.2.840.113635.100.6.3.6); sending to any other topic is refused with 400
// TopicDisallowed. Apple's current certificates list the bundle id together
// with its ".voip" and ".complication" topics in that extension. The
// stand-in is slightly more lenient so that a single-topic test certificate
// can exercise every push type: allowed are
//
//   - the UID itself;
//   - the UID followed by any suffix in [TopicSuffixes] (".voip",
//     ".complication", ...);
//   - every topic listed in the extension, exactly.
func TopicAllowed(topic, uid string, extTopics []string) bool {
	if uid != "" {
		if topic == uid {
			return true
		}
		if rest, ok := strings.CutPrefix(topic, uid); ok {
			for _, suf := range TopicSuffixes {
				if rest == suf {
					return true
				}
			}
		}
	}
	for _, t := range extTopics {
		if topic == t {
			return true
		}
	}
	return false
}

// CertUID returns the subject UID (the bundle id) of an Apple-style push
// certificate, or "".
func CertUID(c *x509.Certificate) string {
	for _, n := range c.Subject.Names {
		if n.Type.Equal(pki.OIDUserID) {
			if s, ok := n.Value.(string); ok {
				return s
			}
		}
	}
	return ""
}

// CertTopics returns the topics listed in the certificate's Apple topics
// extension (1.2.840.113635.100.6.3.6) and whether the extension is present.
// It accepts Apple's layout (a sequence alternating topic strings and
// sequences of kind strings such as "app", "voip") as well as a plain
// sequence of strings: every string directly in the outer sequence is a
// topic, nested sequences are skipped. An unparsable extension yields no
// topics (so every topic outside the UID is disallowed).
func CertTopics(c *x509.Certificate) (topics []string, present bool) {
	for _, ext := range c.Extensions {
		if !ext.Id.Equal(pki.OIDAppleTopics) {
			continue
		}
		present = true
		var elems []asn1.RawValue
		rest, err := asn1.Unmarshal(ext.Value, &elems)
		if err != nil || len(rest) != 0 {
			return nil, true
		}
		for _, e := range elems {
			if e.Class != asn1.ClassUniversal || e.IsCompound {
				continue
			}
			switch e.Tag {
			case asn1.TagUTF8String, asn1.TagPrintableString, asn1.TagIA5String:
				topics = append(topics, string(e.Bytes))
			}
		}
	}
	return topics, present
}
