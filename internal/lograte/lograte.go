package lograte

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// DefaultInterval is the aggregation interval of a Limiter whose Every is 0.
const DefaultInterval = time.Minute

// Limiter logs each kind of event (its key) at most once per interval; the
// events it held back are reported as one line ("… repeated N times in the
// last 1m0s") when the interval ends. Safe for concurrent use. The zero value
// discards everything; make one with New.
type Limiter struct {
	log   *slog.Logger
	every time.Duration

	mu sync.Mutex
	// mu guards m.
	m map[string]*entry
}

type entry struct {
	level slog.Level
	msg   string
	args  []any
	held  int // events since the last line
	timer *time.Timer
}

// New returns a Limiter writing to log once per every (0: DefaultInterval).
func New(log *slog.Logger, every time.Duration) *Limiter {
	if every <= 0 {
		every = DefaultInterval
	}
	return &Limiter{log: log, every: every, m: map[string]*entry{}}
}

// Log logs msg with args at level, unless an event with the same key was
// logged within the interval: then it is counted, and the last such event's
// msg and args are logged with "repeated" (the count) when the interval ends.
func (l *Limiter) Log(level slog.Level, key, msg string, args ...any) {
	if l == nil || l.log == nil {
		return
	}
	l.mu.Lock()
	e := l.m[key]
	if e != nil {
		e.held++
		e.level, e.msg, e.args = level, msg, args
		l.mu.Unlock()
		return
	}
	e = &entry{}
	l.m[key] = e
	e.timer = time.AfterFunc(l.every, func() { l.flush(key) })
	l.mu.Unlock()
	l.log.Log(context.Background(), level, msg, args...)
}

// flush ends key's interval: it logs what was held back, if anything, and
// starts a new interval only then (so a quiet key costs nothing).
func (l *Limiter) flush(key string) {
	l.mu.Lock()
	e := l.m[key]
	if e == nil {
		l.mu.Unlock()
		return
	}
	if e.held == 0 {
		delete(l.m, key)
		l.mu.Unlock()
		return
	}
	level, msg, held := e.level, e.msg, e.held
	args := append(append([]any(nil), e.args...), "repeated", held, "interval", l.every.String())
	e.held = 0
	e.timer = time.AfterFunc(l.every, func() { l.flush(key) })
	l.mu.Unlock()
	l.log.Log(context.Background(), level, msg, args...)
}

// Stop logs what is held back now and stops the timers.
func (l *Limiter) Stop() {
	if l == nil || l.log == nil {
		return
	}
	l.mu.Lock()
	keys := make([]string, 0, len(l.m))
	for k, e := range l.m {
		e.timer.Stop()
		keys = append(keys, k)
	}
	l.mu.Unlock()
	for _, k := range keys {
		l.mu.Lock()
		e := l.m[k]
		delete(l.m, k)
		l.mu.Unlock()
		if e != nil && e.held > 0 {
			l.log.Log(context.Background(), e.level, e.msg, append(append([]any(nil), e.args...), "repeated", e.held, "interval", l.every.String())...)
		}
	}
}
