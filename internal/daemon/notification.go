package daemon

import (
	"bytes"
	"encoding/json"
	"errors"

	"github.com/apnsd/apnsd/internal/apns"
	"github.com/apnsd/apnsd/internal/ipc"
)

// NewNotification turns a validated send into the APNs notification it
// asks for: it applies APNs' defaults (push type from the payload, priority
// 5 for background pushes) and checks APNs' own rules (payload size for the
// push type, header formats). The topic is left as the client gave it;
// Submit fills in the app's when it is empty. Exported for tools (bench)
// that build notifications the way the daemon does.
func NewNotification(s *ipc.Send) (apns.Notification, *ipc.Error) {
	n := apns.Notification{
		DeviceToken: s.Token,
		Topic:       s.Topic,
		PushType:    s.PushType,
		CollapseID:  s.CollapseID,
		ApnsID:      s.ApnsID,
		Payload:     s.Payload,
	}
	if s.Priority != nil {
		n.Priority = *s.Priority
	}
	if s.Expiration != nil {
		n.Expiration, n.HasExpiration = *s.Expiration, true
	}
	if n.PushType == "" {
		n.PushType = defaultPushType(s.Payload)
	}
	if n.PushType == apns.PushTypeBackground && s.Priority == nil {
		n.Priority = apns.PriorityConserve // APNs refuses background pushes at priority 10
	}
	// The topic is filled in by Submit; validate with a stand-in so that
	// every other rule is checked here.
	check := n
	if check.Topic == "" {
		check.Topic = "-"
	}
	// s.Payload is JSON already (ipc.Send: the socket decoder parsed it).
	if err := check.ValidateWithJSONPayload(); err != nil {
		var ve *apns.ValidationError
		if errors.As(err, &ve) && ve.TooLarge {
			return apns.Notification{}, ipc.Errorf(ipc.CodePayloadTooLarge, "%s", ve.Message)
		}
		return apns.Notification{}, ipc.Errorf(ipc.CodeBadRequest, "%v", err)
	}
	if n.PushType == apns.PushTypeLiveActivity {
		// Apple's Live Activity rules (event, timestamp, content-state,
		// start's attributes, dates); Submit adds the
		// .push-type.liveactivity topic suffix.
		if err := apns.ValidateLiveActivity(n.Payload); err != nil {
			return apns.Notification{}, ipc.Errorf(ipc.CodeBadRequest, "live activity: %v", err)
		}
	}
	return n, nil
}

// defaultPushType is "background" for a payload whose aps only says
// content-available (a silent push), else "alert".
func defaultPushType(payload []byte) string {
	if !bytes.Contains(payload, []byte("content-available")) {
		return apns.PushTypeAlert
	}
	var p struct {
		APS map[string]json.RawMessage `json:"aps"`
	}
	if json.Unmarshal(payload, &p) != nil {
		return apns.PushTypeAlert
	}
	if _, ok := p.APS["content-available"]; !ok {
		return apns.PushTypeAlert
	}
	for _, k := range []string{"alert", "badge", "sound"} {
		if _, ok := p.APS[k]; ok {
			return apns.PushTypeAlert
		}
	}
	return apns.PushTypeBackground
}
