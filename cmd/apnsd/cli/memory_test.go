package cli

import (
	"context"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apnsd/apnsd/internal/ipc"
)

// statusWith is a report with one app whose environments have up/target
// connections as given in pairs.
func statusWith(pairs ...[2]int) *ipc.StatusReport {
	app := ipc.AppStatus{Name: "app"}
	for _, p := range pairs {
		app.Envs = append(app.Envs, ipc.EnvStatus{Connections: p[0], Target: p[1]})
	}
	return &ipc.StatusReport{Apps: []ipc.AppStatus{app}}
}

// The start-up memory is released once, only when every environment's
// connections are up; never before.
func TestReleaseStartupMemoryWaitsForConnections(t *testing.T) {
	var mu sync.Mutex
	rep := statusWith([2]int{1, 1}, [2]int{0, 2})
	polls := 0
	status := func() *ipc.StatusReport {
		mu.Lock()
		defer mu.Unlock()
		polls++
		if polls == 5 { // production comes up on the fifth look
			rep = statusWith([2]int{1, 1}, [2]int{2, 2})
		}
		return rep
	}
	var released atomic.Int32
	var atRelease int
	done := make(chan struct{})
	go func() {
		defer close(done)
		releaseStartupMemory(context.Background(), status, func() {
			mu.Lock()
			atRelease = polls
			mu.Unlock()
			released.Add(1)
		}, time.Hour, time.Millisecond)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("never released")
	}
	if n := released.Load(); n != 1 {
		t.Fatalf("released %d times, want 1", n)
	}
	if atRelease != 5 {
		t.Fatalf("released after %d status looks, want 5 (the first with every connection up)", atRelease)
	}
}

// Connections that never come up (APNs unreachable) do not keep the
// memory: it is released once the settle time has passed.
func TestReleaseStartupMemoryAfterSettle(t *testing.T) {
	var released atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		releaseStartupMemory(context.Background(), func() *ipc.StatusReport { return statusWith([2]int{0, 1}) },
			func() { released.Add(1) }, 20*time.Millisecond, time.Millisecond)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("never released")
	}
	if n := released.Load(); n != 1 {
		t.Fatalf("released %d times, want 1", n)
	}
}

// A daemon that stops before it settled releases nothing and the goroutine
// ends.
func TestReleaseStartupMemoryStopped(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var released atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		releaseStartupMemory(ctx, func() *ipc.StatusReport { return statusWith([2]int{0, 1}) },
			func() { released.Add(1) }, time.Hour, time.Millisecond)
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("did not stop")
	}
	if n := released.Load(); n != 0 {
		t.Fatalf("released %d times after stop, want 0", n)
	}
}

func TestAllConnected(t *testing.T) {
	for _, c := range []struct {
		rep  *ipc.StatusReport
		want bool
	}{
		{&ipc.StatusReport{}, true},
		{statusWith([2]int{1, 1}), true},
		{statusWith([2]int{2, 1}), true},
		{statusWith([2]int{1, 1}, [2]int{1, 2}), false},
		{statusWith([2]int{0, 1}), false},
	} {
		if got := allConnected(c.rep); got != c.want {
			t.Errorf("allConnected(%+v) = %v, want %v", c.rep.Apps, got, c.want)
		}
	}
}

// apnsd's idle RSS is mostly its binary's pages (docs/performance.md,
// "Idle RSS"): Prometheus' client library with protobuf, procfs and yaml
// was a third of the binary and ~4 MiB of idle RSS, even with [metrics]
// off. internal/prom writes the exposition instead; this keeps that
// library (and protobuf, which only it brought in) out of apnsd.
func TestApnsdLinksNoPrometheusClient(t *testing.T) {
	deps := apnsdDeps(t)
	for _, dep := range deps {
		for _, banned := range []string{"github.com/prometheus/", "google.golang.org/protobuf/", "go.yaml.in/"} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("apnsd links %s (see docs/performance.md, \"Idle RSS\")", dep)
			}
		}
	}
	if !slices.Contains(deps, "github.com/apnsd/apnsd/internal/prom") {
		t.Errorf("go list -deps does not list internal/prom; it lists:\n%s", strings.Join(deps, "\n"))
	}
}

// Package regexp (its compiler, matcher and Unicode tables) is resident at
// idle too, once linked; apnsd's name checks are hand-written instead
// (internal/config, internal/apns; their tests keep the regexps as the
// oracle). This fails if anything apnsd links brings regexp back.
func TestApnsdLinksNoRegexp(t *testing.T) {
	deps := apnsdDeps(t)
	for _, dep := range deps {
		if dep == "regexp" || strings.HasPrefix(dep, "regexp/") {
			t.Errorf("apnsd links %s (see docs/performance.md, \"Idle RSS\"); who imports it: go list -f '{{.ImportPath}} {{.Imports}}' -deps ./cmd/apnsd | grep -w regexp", dep)
		}
	}
	if !slices.Contains(deps, "github.com/apnsd/apnsd/internal/config") {
		t.Errorf("go list -deps does not list internal/config; it lists:\n%s", strings.Join(deps, "\n"))
	}
}

// apnsdDeps is what `go list -deps ./cmd/apnsd` lists: every package the
// daemon binary links.
func apnsdDeps(t *testing.T) []string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("the go command is not on PATH: run the tests with go test")
	}
	out, err := exec.Command(gobin, "list", "-deps", "github.com/apnsd/apnsd/cmd/apnsd").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	return strings.Fields(string(out))
}
