package daemon

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
)

// NewLogger makes the daemon's logger. format is "text", "json", "journal"
// or "auto" (journal when stderr is connected to journald, which sets
// JOURNAL_STREAM, else text). level is debug, info, warn or error.
func NewLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil && level != "" {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	if format == "" || format == "auto" {
		format = "text"
		if os.Getenv("JOURNAL_STREAM") != "" {
			format = "journal"
		}
	}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "journal":
		return slog.New(newJournalHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want auto, text, json or journal", format)
}

// journalHandler writes one line per record, prefixed with the syslog
// priority journald understands ("<3>" error … "<7>" debug) and without a
// timestamp, since journald adds its own.
type journalHandler struct {
	inner slog.Handler
	out   *journalOut
}

type journalOut struct {
	mu  sync.Mutex
	buf bytes.Buffer
	w   io.Writer
}

func newJournalHandler(w io.Writer, opts *slog.HandlerOptions) *journalHandler {
	out := &journalOut{w: w}
	o := *opts
	o.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey) {
			return slog.Attr{}
		}
		return a
	}
	return &journalHandler{inner: slog.NewTextHandler(&out.buf, &o), out: out}
}

func (h *journalHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	prio := 6
	switch {
	case r.Level >= slog.LevelError:
		prio = 3
	case r.Level >= slog.LevelWarn:
		prio = 4
	case r.Level < slog.LevelInfo:
		prio = 7
	}
	h.out.mu.Lock()
	defer h.out.mu.Unlock()
	h.out.buf.Reset()
	fmt.Fprintf(&h.out.buf, "<%d>", prio)
	if err := h.inner.Handle(ctx, r); err != nil {
		return err
	}
	_, err := h.out.w.Write(h.out.buf.Bytes())
	return err
}

func (h *journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &journalHandler{inner: h.inner.WithAttrs(as), out: h.out}
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	return &journalHandler{inner: h.inner.WithGroup(name), out: h.out}
}
