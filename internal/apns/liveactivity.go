package apns

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Live Activity events (the "event" key of a liveactivity payload's aps
// dictionary), as Apple's "Starting and updating Live Activities with
// ActivityKit push notifications" documents them.
const (
	LiveActivityUpdate = "update"
	LiveActivityEnd    = "end"
	// LiveActivityStart is push-to-start (iOS 17.2 and later). It cannot be
	// sent on a broadcast channel.
	LiveActivityStart = "start"
)

// LiveActivityTopicSuffix is what Apple appends to the bundle id to form the
// apns-topic of a liveactivity push sent to a device token.
const LiveActivityTopicSuffix = ".push-type.liveactivity"

// LiveActivityTopic returns the apns-topic for a Live Activity push to a
// device token: the bundle id with ".push-type.liveactivity" appended
// (unless it already ends with it).
func LiveActivityTopic(bundleID string) string {
	if strings.HasSuffix(bundleID, LiveActivityTopicSuffix) {
		return bundleID
	}
	return bundleID + LiveActivityTopicSuffix
}

// maxSecondsTimestamp is the largest date (in seconds since 1970) taken as
// seconds: 10^11 s is the year 5138. A larger value is almost certainly
// milliseconds (JavaScript's Date.now(), Java's currentTimeMillis()), which
// ActivityKit would read as a date tens of thousands of years away.
const maxSecondsTimestamp = 1e11

// ValidateLiveActivity checks a payload for push type liveactivity sent to
// a device token (POST /3/device/<token>) against Apple's rules:
//
//   - the payload is a JSON object with an "aps" object;
//   - aps.event is "update", "end" or "start";
//   - aps.timestamp is present, a number of seconds since 1970 (not
//     milliseconds);
//   - aps.content-state is an object, required for update and start
//     (optional for end, where Apple recommends the final state);
//   - start also needs aps.attributes-type (a non-empty string),
//     aps.attributes (an object) and aps.alert (Apple: "Include an alert in
//     the JSON payload"), and may carry either input-push-token (the number
//     1) or input-push-channel (a channel id), not both;
//   - attributes-type, attributes, input-push-token and input-push-channel
//     appear only with start;
//   - the optional dismissal-date and stale-date are seconds since 1970,
//     relevance-score is a number, alert is an object or a string.
//
// The error is a *ValidationError whose Field is the JSON path of the
// offending key (such as "payload.aps.event"). Keys Apple does not document
// are left alone: the payload may carry app-specific data.
func ValidateLiveActivity(payload []byte) error {
	return validateLiveActivity(payload, false)
}

// ValidateBroadcastLiveActivity is [ValidateLiveActivity] for a payload
// sent on a broadcast channel (POST /4/broadcasts/apps/<bundle id>). It also
// refuses event "start" ("You can't use broadcast push notifications to
// start a Live Activity") and, with it, every start-only key.
func ValidateBroadcastLiveActivity(payload []byte) error {
	return validateLiveActivity(payload, true)
}

func laErr(field, format string, args ...any) *ValidationError {
	return &ValidationError{Field: field, Message: fmt.Sprintf(format, args...)}
}

func validateLiveActivity(payload []byte, broadcast bool) error {
	var root map[string]json.RawMessage
	if err := json.Unmarshal(payload, &root); err != nil || root == nil {
		if !json.Valid(payload) {
			return laErr("payload", "is not valid JSON")
		}
		return laErr("payload", "must be a JSON object with an \"aps\" object for push type liveactivity")
	}
	rawAps, ok := root["aps"]
	if !ok {
		return laErr("payload.aps", "is required for push type liveactivity")
	}
	var aps map[string]json.RawMessage
	if err := json.Unmarshal(rawAps, &aps); err != nil || aps == nil {
		return laErr("payload.aps", "must be a JSON object, not %s", jsonKind(rawAps))
	}

	rawEvent, ok := aps["event"]
	if !ok {
		return laErr("payload.aps.event", "is required for push type liveactivity: one of update, end, start")
	}
	var event string
	if err := json.Unmarshal(rawEvent, &event); err != nil {
		return laErr("payload.aps.event", "must be a string (update, end or start), not %s", jsonKind(rawEvent))
	}
	switch event {
	case LiveActivityUpdate, LiveActivityEnd:
	case LiveActivityStart:
		if broadcast {
			return laErr("payload.aps.event", "\"start\" cannot be sent on a broadcast channel (Apple: broadcast pushes cannot start a Live Activity); send push-to-start to a device's push-to-start token, with input-push-channel to subscribe it to the channel")
		}
	default:
		return laErr("payload.aps.event", "%q must be one of update, end, start", event)
	}

	if err := laDate(aps, "timestamp", true); err != nil {
		return err
	}

	if raw, ok := aps["content-state"]; ok {
		if !isJSONObject(raw) {
			return laErr("payload.aps.content-state", "must be a JSON object matching the activity's ContentState, not %s", jsonKind(raw))
		}
	} else if event != LiveActivityEnd {
		return laErr("payload.aps.content-state", "is required for event %q: an object matching the activity's ContentState", event)
	}

	if err := laDate(aps, "dismissal-date", false); err != nil {
		return err
	}
	if err := laDate(aps, "stale-date", false); err != nil {
		return err
	}
	if raw, ok := aps["relevance-score"]; ok {
		var f float64
		if json.Unmarshal(raw, &f) != nil {
			return laErr("payload.aps.relevance-score", "must be a number, not %s", jsonKind(raw))
		}
	}
	if raw, ok := aps["alert"]; ok {
		if k := jsonKind(raw); k != "an object" && k != "a string" {
			return laErr("payload.aps.alert", "must be an object (title, body, sound) or a string, not %s", k)
		}
	}

	startOnly := []string{"attributes-type", "attributes", "input-push-token", "input-push-channel"}
	if event != LiveActivityStart {
		for _, k := range startOnly {
			if _, ok := aps[k]; ok {
				return laErr("payload.aps."+k, "is only for event \"start\" (push-to-start), not %q", event)
			}
		}
		return nil
	}

	// event == start
	raw, ok := aps["attributes-type"]
	if !ok {
		return laErr("payload.aps.attributes-type", "is required for event \"start\": the name of the app's ActivityAttributes type")
	}
	var at string
	if json.Unmarshal(raw, &at) != nil {
		return laErr("payload.aps.attributes-type", "must be a string (the ActivityAttributes type name), not %s", jsonKind(raw))
	}
	if strings.TrimSpace(at) == "" {
		return laErr("payload.aps.attributes-type", "is empty; give the name of the app's ActivityAttributes type")
	}
	raw, ok = aps["attributes"]
	if !ok {
		return laErr("payload.aps.attributes", "is required for event \"start\": an object matching the activity's ActivityAttributes")
	}
	if !isJSONObject(raw) {
		return laErr("payload.aps.attributes", "must be a JSON object matching the activity's ActivityAttributes, not %s", jsonKind(raw))
	}
	if _, ok := aps["alert"]; !ok {
		return laErr("payload.aps.alert", "is required for event \"start\" (Apple: include an alert so that the person is told the Live Activity started)")
	}
	rawTok, hasTok := aps["input-push-token"]
	rawChan, hasChan := aps["input-push-channel"]
	if hasTok && hasChan {
		return laErr("payload.aps.input-push-token", "and input-push-channel are exclusive: a Live Activity gets updates either by push token or on a channel")
	}
	if hasTok {
		var n float64
		if json.Unmarshal(rawTok, &n) != nil || n != 1 {
			return laErr("payload.aps.input-push-token", "must be the number 1 (ask for an update push token), not %s", string(rawTok))
		}
	}
	if hasChan {
		var id string
		if json.Unmarshal(rawChan, &id) != nil {
			return laErr("payload.aps.input-push-channel", "must be a channel id (a base64 string), not %s", jsonKind(rawChan))
		}
		if err := ValidateChannelID(id); err != nil {
			msg := err.Error()
			if ve, ok := errors.AsType[*ValidationError](err); ok {
				msg = ve.Message // without ValidateChannelID's field name
			}
			return laErr("payload.aps.input-push-channel", "%s", msg)
		}
	}
	return nil
}

// laDate checks that aps[key] (if present; required when required is set) is
// a number of seconds since 1970.
func laDate(aps map[string]json.RawMessage, key string, required bool) error {
	field := "payload.aps." + key
	raw, ok := aps[key]
	if !ok {
		if required {
			return laErr(field, "is required for push type liveactivity: the time of the update in seconds since 1970")
		}
		return nil
	}
	var f float64
	if json.Unmarshal(raw, &f) != nil {
		return laErr(field, "must be a number of seconds since 1970, not %s", jsonKind(raw))
	}
	if f < 0 {
		return laErr(field, "is negative (%s); it must be seconds since 1970", string(raw))
	}
	if f >= maxSecondsTimestamp {
		return laErr(field, "%s looks like milliseconds; Apple wants seconds since 1970", string(raw))
	}
	return nil
}

func isJSONObject(raw json.RawMessage) bool { return jsonKind(raw) == "an object" }

// jsonKind names the JSON type of raw for an error message.
func jsonKind(raw json.RawMessage) string {
	b := bytes.TrimSpace(raw)
	if len(b) == 0 {
		return "nothing"
	}
	switch b[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}
