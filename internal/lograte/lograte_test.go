package lograte

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestLimiterAggregates(t *testing.T) {
	var buf syncBuf
	l := New(slog.New(slog.NewTextHandler(&buf, nil)), 200*time.Millisecond)
	for i := range 300 {
		l.Log(slog.LevelWarn, "refused uid 65534", "refused a client", "uid", 65534, "n", i)
	}
	l.Log(slog.LevelWarn, "refused uid 1000", "refused a client", "uid", 1000)
	if got := strings.Count(buf.String(), "\n"); got != 2 {
		t.Fatalf("%d lines at once, want 2 (the first of each key):\n%s", got, buf.String())
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(buf.String(), "repeated=299") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(buf.String(), "n=299 repeated=299") {
		t.Fatalf("no aggregated line with the count and the last event's fields:\n%s", buf.String())
	}
	// A quiet interval: the key is forgotten, and the next event is
	// logged at once again.
	time.Sleep(500 * time.Millisecond)
	before := strings.Count(buf.String(), "\n")
	l.Log(slog.LevelWarn, "refused uid 65534", "refused a client", "uid", 65534, "n", "again")
	if got := strings.Count(buf.String(), "\n"); got != before+1 || strings.Count(buf.String(), "uid=1000") != 1 {
		t.Errorf("after a quiet interval:\n%s", buf.String())
	}
	l.Log(slog.LevelWarn, "refused uid 65534", "refused a client", "uid", 65534, "n", "held")
	l.Stop()
	if !strings.Contains(buf.String(), "n=held repeated=1") {
		t.Errorf("Stop did not log what it held:\n%s", buf.String())
	}
}
