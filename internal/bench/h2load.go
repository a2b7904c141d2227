package bench

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// H2loadResult is h2load's view of the machine's ceiling: a C HTTP/2 load
// generator against nghttpd, nothing of apnsd involved.
type H2loadResult struct {
	// Command is the h2load command line; Server the nghttpd one.
	Command, Server string
	// Rate is h2load's "req/s"; Summary its key output lines.
	Rate    float64
	Summary []string
}

var h2loadRate = regexp.MustCompile(`finished in [^,]+, ([0-9.]+) req/s`)

// runH2load starts a separate nghttpd without --verify-client (h2load
// cannot present a client certificate) and points h2load at it with the
// benchmark's connections and concurrency.
func runH2load(ctx context.Context, o RunOptions, m *material) (*H2loadResult, error) {
	k, srvArgs, err := startNghttpd(o.Nghttpd, m, o.MaxStreams, false)
	if err != nil {
		return nil, err
	}
	defer k.close()
	perConn := min(o.MaxStreams, (o.Clients*o.Pipeline+o.Conns-1)/o.Conns)
	args := []string{"-c", strconv.Itoa(o.Conns), "-t", "1", "-m", strconv.Itoa(perConn)}
	if o.Duration > 0 {
		args = append(args, "-D", strconv.Itoa(max(1, int(o.Duration.Seconds()))), "--warm-up-time", "1")
	} else {
		args = append(args, "-n", strconv.Itoa(o.N))
	}
	args = append(args, "-d", m.bodyFile,
		"-H", "apns-topic: "+Topic, "-H", "apns-push-type: alert",
		k.url+"/3/device/"+Token)
	cmd := exec.CommandContext(ctx, o.H2load, args...)
	outb, err := cmd.CombinedOutput()
	out := string(outb)
	res := &H2loadResult{
		Command: o.H2load + " " + shellJoin(args),
		Server:  shellJoin(srvArgs),
	}
	if err != nil {
		return res, fmt.Errorf("%s: %w\n%s", res.Command, err, out)
	}
	mm := h2loadRate.FindStringSubmatch(out)
	if mm == nil {
		return res, fmt.Errorf("no req/s in h2load output:\n%s", out)
	}
	res.Rate, _ = strconv.ParseFloat(mm[1], 64)
	for _, l := range strings.Split(out, "\n") {
		for _, p := range []string{"finished in", "requests:", "status codes:", "time for request:"} {
			if strings.HasPrefix(l, p) {
				res.Summary = append(res.Summary, l)
			}
		}
	}
	return res, nil
}

func shellJoin(a []string) string {
	q := make([]string, len(a))
	for i, s := range a {
		if s == "" || strings.ContainsAny(s, " '\"$\\*?;&|<>()") {
			q[i] = "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
		} else {
			q[i] = s
		}
	}
	return strings.Join(q, " ")
}
