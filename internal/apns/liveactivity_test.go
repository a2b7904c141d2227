package apns

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateLiveActivity(t *testing.T) {
	const cs = `"content-state":{"score":"1-0"}`
	const start = `"event":"start","timestamp":1685952000,` + cs + `,"attributes-type":"GameAttributes","attributes":{"game":"x"},"alert":{"title":"Kick-off"}`
	tests := []struct {
		name    string
		payload string
		field   string // "" = valid
		msg     string // substring of the message
	}{
		// Apple's examples.
		{"apple update", `{"aps":{"timestamp":1685952000,"event":"update","content-state":{"currentHealthLevel":0.0,"eventDescription":"Power Panda has been knocked down!"},"alert":{"title":{"loc-key":"%@ is knocked down!","loc-args":["Power Panda"]},"body":{"loc-key":"Use a potion to heal %@!","loc-args":["Power Panda"]},"sound":"HeroDown.mp4"}}}`, "", ""},
		{"apple relevance", `{"aps":{"timestamp":1685952000,"event":"update","relevance-score":100,"content-state":{"currentHealthLevel":0.941}}}`, "", ""},
		{"apple start", `{"aps":{"timestamp":1234,"event":"start","content-state":{"currentHealthLevel":100},"attributes-type":"AdventureAttributes","attributes":{"hero":{"name":"Power Panda"}},"alert":{"title":"x","body":"y","sound":"chime.aiff"}}}`, "", ""},
		{"start input-push-token", `{"aps":{` + start + `,"input-push-token":1}}`, "", ""},
		{"start input-push-channel", `{"aps":{` + start + `,"input-push-channel":"dHN0LXNyY2gtY2hubA=="}}`, "", ""},
		{"end without content-state", `{"aps":{"event":"end","timestamp":1685952000,"dismissal-date":1663177260}}`, "", ""},
		{"end with state and stale", `{"aps":{"event":"end","timestamp":1685952000,` + cs + `,"stale-date":1685955600}}`, "", ""},
		{"string alert", `{"aps":{"event":"update","timestamp":1,` + cs + `,"alert":"Goal!"}}`, "", ""},
		{"custom keys kept", `{"aps":{"event":"update","timestamp":1,` + cs + `},"myapp":{"x":1}}`, "", ""},
		{"fractional timestamp", `{"aps":{"event":"update","timestamp":1685952000.5,` + cs + `}}`, "", ""},

		{"not json", `{"aps":`, "payload", "not valid JSON"},
		{"array", `[1]`, "payload", "JSON object"},
		{"no aps", `{"x":1}`, "payload.aps", "required"},
		{"aps string", `{"aps":"hi"}`, "payload.aps", "not a string"},
		{"no event", `{"aps":{"timestamp":1,` + cs + `}}`, "payload.aps.event", "required"},
		{"event begin", `{"aps":{"event":"begin","timestamp":1,` + cs + `}}`, "payload.aps.event", `"begin" must be one of update, end, start`},
		{"event case", `{"aps":{"event":"Update","timestamp":1,` + cs + `}}`, "payload.aps.event", `"Update" must be one of`},
		{"event number", `{"aps":{"event":1,"timestamp":1,` + cs + `}}`, "payload.aps.event", "must be a string"},
		{"no timestamp", `{"aps":{"event":"update",` + cs + `}}`, "payload.aps.timestamp", "required"},
		{"timestamp string", `{"aps":{"event":"update","timestamp":"1685952000",` + cs + `}}`, "payload.aps.timestamp", "not a string"},
		{"timestamp ms", `{"aps":{"event":"update","timestamp":1685952000000,` + cs + `}}`, "payload.aps.timestamp", "milliseconds"},
		{"timestamp negative", `{"aps":{"event":"update","timestamp":-5,` + cs + `}}`, "payload.aps.timestamp", "negative"},
		{"update no state", `{"aps":{"event":"update","timestamp":1}}`, "payload.aps.content-state", `required for event "update"`},
		{"state array", `{"aps":{"event":"update","timestamp":1,"content-state":[1]}}`, "payload.aps.content-state", "not an array"},
		{"end state string", `{"aps":{"event":"end","timestamp":1,"content-state":"x"}}`, "payload.aps.content-state", "not a string"},
		{"dismissal ms", `{"aps":{"event":"end","timestamp":1,"dismissal-date":1663177260000}}`, "payload.aps.dismissal-date", "milliseconds"},
		{"dismissal bool", `{"aps":{"event":"end","timestamp":1,"dismissal-date":true}}`, "payload.aps.dismissal-date", "not a boolean"},
		{"stale string", `{"aps":{"event":"update","timestamp":1,` + cs + `,"stale-date":"soon"}}`, "payload.aps.stale-date", "not a string"},
		{"relevance string", `{"aps":{"event":"update","timestamp":1,` + cs + `,"relevance-score":"high"}}`, "payload.aps.relevance-score", "must be a number"},
		{"alert number", `{"aps":{"event":"update","timestamp":1,` + cs + `,"alert":5}}`, "payload.aps.alert", "not a number"},
		{"attributes on update", `{"aps":{"event":"update","timestamp":1,` + cs + `,"attributes":{}}}`, "payload.aps.attributes", `only for event "start"`},
		{"input token on end", `{"aps":{"event":"end","timestamp":1,"input-push-token":1}}`, "payload.aps.input-push-token", `only for event "start"`},
		{"start no attributes-type", `{"aps":{"event":"start","timestamp":1,` + cs + `,"attributes":{},"alert":"x"}}`, "payload.aps.attributes-type", "required"},
		{"start empty attributes-type", `{"aps":{"event":"start","timestamp":1,` + cs + `,"attributes-type":" ","attributes":{},"alert":"x"}}`, "payload.aps.attributes-type", "empty"},
		{"start attributes-type number", `{"aps":{"event":"start","timestamp":1,` + cs + `,"attributes-type":3,"attributes":{},"alert":"x"}}`, "payload.aps.attributes-type", "must be a string"},
		{"start no attributes", `{"aps":{"event":"start","timestamp":1,` + cs + `,"attributes-type":"A","alert":"x"}}`, "payload.aps.attributes", "required"},
		{"start attributes string", `{"aps":{"event":"start","timestamp":1,` + cs + `,"attributes-type":"A","attributes":"x","alert":"x"}}`, "payload.aps.attributes", "not a string"},
		{"start no state", `{"aps":{"event":"start","timestamp":1,"attributes-type":"A","attributes":{},"alert":"x"}}`, "payload.aps.content-state", `required for event "start"`},
		{"start no alert", `{"aps":{"event":"start","timestamp":1,` + cs + `,"attributes-type":"A","attributes":{}}}`, "payload.aps.alert", "required"},
		{"start token 2", `{"aps":{` + start + `,"input-push-token":2}}`, "payload.aps.input-push-token", "number 1"},
		{"start token true", `{"aps":{` + start + `,"input-push-token":true}}`, "payload.aps.input-push-token", "number 1"},
		{"start channel bad", `{"aps":{` + start + `,"input-push-channel":"not base64!"}}`, "payload.aps.input-push-channel", "not base64"},
		{"start channel number", `{"aps":{` + start + `,"input-push-channel":7}}`, "payload.aps.input-push-channel", "not a number"},
		{"start token and channel", `{"aps":{` + start + `,"input-push-token":1,"input-push-channel":"dHN0LXNyY2gtY2hubA=="}}`, "payload.aps.input-push-token", "exclusive"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateLiveActivity([]byte(tc.payload))
			checkValidation(t, err, tc.field, tc.msg)
		})
	}
}

func TestValidateBroadcastLiveActivity(t *testing.T) {
	ok := `{"aps":{"event":"update","timestamp":1685952000,"content-state":{"a":1}}}`
	if err := ValidateBroadcastLiveActivity([]byte(ok)); err != nil {
		t.Fatalf("update: %v", err)
	}
	end := `{"aps":{"event":"end","timestamp":1685952000,"dismissal-date":0}}`
	if err := ValidateBroadcastLiveActivity([]byte(end)); err != nil {
		t.Fatalf("end: %v", err)
	}
	start := `{"aps":{"event":"start","timestamp":1,"content-state":{},"attributes-type":"A","attributes":{},"alert":"x"}}`
	if err := ValidateLiveActivity([]byte(start)); err != nil {
		t.Fatalf("start to a device: %v", err)
	}
	err := ValidateBroadcastLiveActivity([]byte(start))
	checkValidation(t, err, "payload.aps.event", "cannot be sent on a broadcast channel")
	// The message printed to a user reads as one sentence with the field.
	if got := err.Error(); !strings.HasPrefix(got, "payload.aps.event: \"start\" cannot") {
		t.Errorf("Error() = %q", got)
	}
}

func TestLiveActivityErrorText(t *testing.T) {
	err := ValidateLiveActivity([]byte(`{"aps":{"event":"begin","timestamp":1,"content-state":{}}}`))
	want := `payload.aps.event: "begin" must be one of update, end, start`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %q", err, want)
	}
}

func TestLiveActivityTopic(t *testing.T) {
	for in, want := range map[string]string{
		"com.example.app":                        "com.example.app.push-type.liveactivity",
		"com.example.app.push-type.liveactivity": "com.example.app.push-type.liveactivity",
	} {
		if got := LiveActivityTopic(in); got != want {
			t.Errorf("LiveActivityTopic(%q) = %q, want %q", in, got, want)
		}
	}
}

// checkValidation asserts that err is nil (field "") or a *ValidationError
// on field whose message contains msg.
func checkValidation(t *testing.T, err error, field, msg string) {
	t.Helper()
	if field == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("got %v (%T), want a *ValidationError on %s", err, err, field)
	}
	if ve.Field != field {
		t.Errorf("field = %q, want %q (error %q)", ve.Field, field, err)
	}
	if !strings.Contains(ve.Message, msg) {
		t.Errorf("message %q does not contain %q", ve.Message, msg)
	}
}
