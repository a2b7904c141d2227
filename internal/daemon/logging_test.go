package daemon

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestLogFormats(t *testing.T) {
	tests := []struct {
		name, format, journalStream string
		check                       func(t *testing.T, out string)
	}{
		{name: "journal", format: "journal", check: checkJournal},
		{name: "auto under journald", format: "auto", journalStream: "8:1234", check: checkJournal},
		{name: "auto on a terminal", format: "auto", check: func(t *testing.T, out string) {
			if !strings.HasPrefix(out, "time=") || strings.HasPrefix(out, "<") {
				t.Errorf("text line %q: want a timestamp and no priority prefix", out)
			}
		}},
		{name: "json", format: "json", check: func(t *testing.T, out string) {
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				var m map[string]any
				if err := json.Unmarshal([]byte(line), &m); err != nil {
					t.Fatalf("line %q is not JSON: %v", line, err)
				}
				if m["msg"] == nil || m["level"] == nil || m["time"] == nil {
					t.Errorf("JSON line %q lacks msg, level or time", line)
				}
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("JOURNAL_STREAM", tc.journalStream)
			var buf bytes.Buffer
			log, err := NewLogger(&buf, tc.format, "debug")
			if err != nil {
				t.Fatal(err)
			}
			log = log.With("component", "test")
			log.Debug("d", "k", 1)
			log.Info("i")
			log.Warn("w")
			log.Error("e", "err", "boom")
			tc.check(t, buf.String())
		})
	}
	if _, err := NewLogger(&bytes.Buffer{}, "xml", "info"); err == nil {
		t.Error("log format xml accepted")
	}
}

// checkJournal wants one line per record, with the syslog priority journald
// reads and no timestamp or level of our own (journald has both).
func checkJournal(t *testing.T, out string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	want := []string{"<7>", "<6>", "<4>", "<3>"}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d: %q", len(lines), len(want), out)
	}
	for i, line := range lines {
		if !strings.HasPrefix(line, want[i]+"msg=") {
			t.Errorf("line %q: want prefix %q then msg=", line, want[i])
		}
		if strings.Contains(line, "time=") || strings.Contains(line, "level=") {
			t.Errorf("line %q repeats what journald records itself", line)
		}
		if !strings.Contains(line, "component=test") {
			t.Errorf("line %q lost the logger's attributes", line)
		}
	}
}
