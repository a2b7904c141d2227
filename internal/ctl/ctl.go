package ctl

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/apnsd/apnsd/internal/defaults"
	"github.com/apnsd/apnsd/internal/ipc"
)

// Exit codes. Scripts can rely on them; in bulk mode the most severe one
// seen is returned.
const (
	ExitOK          = 0  // delivered (or queued), pong, reload done, config valid
	ExitAPNsRefused = 1  // APNs answered with an error status
	ExitRefused     = 2  // apnsd refused the request (error code), reload failed, config invalid
	ExitUnreachable = 3  // could not reach apnsd, or the connection broke
	ExitUsage       = 64 // bad command line (EX_USAGE)
)

const usage = `apnsctl: talk to a running apnsd.

Usage:
  apnsctl [-socket PATH] [-timeout D] COMMAND [flags]

Commands:
  send     send one notification (flags), to many devices (-tokens-file), on a
           broadcast channel (-channel), or JSON request lines from stdin
  channel  create, get, list or delete broadcast channels (apnsctl channel -h)
  ping     check that apnsd answers
  status   show connections, credentials and counters (-json for JSON)
  reload   re-read the config file and every credential now
  check    validate a config file and its credentials without a daemon (runs apnsd -check)
  unregistered
           list device tokens APNs answered 410 for (from unregistered_file)
  version  print apnsctl's version

Exit codes: 0 delivered/ok, 1 refused by APNs, 2 refused by apnsd (or reload
failed, config invalid), 3 apnsd unreachable, 64 usage error.

Global flags:
`

type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	client         ipc.Client
	timeout        time.Duration
}

// Main runs apnsctl with args (without the program name) and returns the
// exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("apnsctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", envOr("APNSD_SOCKET", defaults.Socket), "apnsd's socket (env APNSD_SOCKET)")
	timeout := fs.Duration("timeout", 60*time.Second, "give up waiting for apnsd after this long")
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	c := &cli{stdin: stdin, stdout: stdout, stderr: stderr, client: ipc.Client{Socket: *socket}, timeout: *timeout}
	if fs.NArg() == 0 {
		fs.Usage()
		return ExitUsage
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	switch cmd {
	case "send":
		return c.send(rest)
	case "channel":
		return c.channel(rest)
	case "ping":
		return c.simple(rest, "ping")
	case "status":
		return c.status(rest)
	case "reload":
		return c.simple(rest, "reload")
	case "check":
		return c.check(rest)
	case "unregistered":
		return c.unregistered(rest)
	case "version":
		fmt.Fprintln(stdout, "apnsctl", defaults.Version)
		return ExitOK
	case "help":
		fs.Usage()
		return ExitOK
	}
	fmt.Fprintf(stderr, "apnsctl: unknown command %q (see apnsctl -h)\n", cmd)
	return ExitUsage
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func (c *cli) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), c.timeout)
}

// deadline is the "deadline" apnsctl gives its sends: when it gives up.
func (c *cli) deadline() time.Time { return time.Now().Add(c.timeout) }

// fail reports a transport error and returns the exit code for it.
func (c *cli) fail(err error) int {
	fmt.Fprintf(c.stderr, "apnsctl: %v\n", err)
	return ExitUnreachable
}

func (c *cli) simple(args []string, op string) int {
	fs := flag.NewFlagSet("apnsctl "+op, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	asJSON := fs.Bool("json", false, "print the answer as JSON")
	if fs.Parse(args) != nil || fs.NArg() > 0 {
		return ExitUsage
	}
	ctx, cancel := c.ctx()
	defer cancel()
	r, err := c.client.Do(ctx, map[string]string{"op": op})
	if err != nil {
		return c.fail(err)
	}
	if *asJSON {
		b, _ := json.Marshal(r)
		fmt.Fprintln(c.stdout, string(b))
	}
	if e := r.Err(); e != nil {
		fmt.Fprintf(c.stderr, "apnsctl: %s failed: %s: %s\n", op, e.Code, e.Message)
		if r.ReloadReport != nil {
			for _, m := range r.ReloadReport.Errors {
				if !strings.Contains(e.Message, m) { // the message quotes the first
					fmt.Fprintln(c.stderr, "  "+m)
				}
			}
		}
		return ExitRefused
	}
	if *asJSON {
		return ExitOK
	}
	switch op {
	case "ping":
		fmt.Fprintf(c.stdout, "pong from apnsd %s\n", r.Version)
	case "reload":
		if r.ReloadReport == nil || len(r.ReloadReport.Reloaded) == 0 {
			fmt.Fprintln(c.stdout, "reloaded: nothing changed")
		}
		if r.ReloadReport != nil {
			for _, m := range r.ReloadReport.Reloaded {
				fmt.Fprintln(c.stdout, "reloaded: "+m)
			}
		}
	}
	return ExitOK
}

// sendFlags are the flags of apnsctl send.
type sendFlags struct {
	token, alert, sound, payload, app, env, topic, pushType, collapseID, apnsID string
	tokensFile, channel                                                         string
	badge, priority                                                             int
	expiration                                                                  int64
	noWait, asJSON                                                              bool
}

func (c *cli) send(args []string) int {
	fs := flag.NewFlagSet("apnsctl send", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	var f sendFlags
	fs.StringVar(&f.token, "token", "", "device token (hex; the <a1b2 c3d4> form an app logs works as is). Without -token, JSON request lines are read from stdin")
	fs.StringVar(&f.tokensFile, "tokens-file", "", "send to every token in FILE (one a line; - for stdin), as multicasts of up to 1000 tokens; prints one line per token")
	fs.StringVar(&f.channel, "channel", "", "broadcast on this channel id (push type liveactivity; see apnsctl channel)")
	fs.StringVar(&f.alert, "alert", "", "alert text (aps.alert)")
	fs.IntVar(&f.badge, "badge", -1, "badge number (aps.badge)")
	fs.StringVar(&f.sound, "sound", "", "sound name (aps.sound)")
	fs.StringVar(&f.payload, "payload", "", "full payload JSON, or @FILE to read it from a file")
	fs.StringVar(&f.app, "app", "", "configured app name (needed when more than one app is configured)")
	fs.StringVar(&f.env, "env", "", "sandbox or production (default: the app's default)")
	fs.StringVar(&f.topic, "topic", "", "apns-topic (default: the app's topic)")
	fs.StringVar(&f.pushType, "push-type", "", "apns-push-type: alert, background, voip, ... (default alert)")
	fs.IntVar(&f.priority, "priority", 0, "apns-priority: 10, 5 or 1")
	fs.Int64Var(&f.expiration, "expiration", -1, "apns-expiration, UNIX seconds (0: deliver once or never)")
	fs.StringVar(&f.collapseID, "collapse-id", "", "apns-collapse-id (at most 64 bytes)")
	fs.StringVar(&f.apnsID, "apns-id", "", "apns-id (lowercase UUID)")
	fs.BoolVar(&f.noWait, "no-wait", false, "return once apnsd has queued it, without waiting for APNs")
	fs.BoolVar(&f.asJSON, "json", false, "print apnsd's answer as JSON")
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(c.stderr, "apnsctl send: unexpected argument %q\n", fs.Arg(0))
		return ExitUsage
	}
	if n := countSet(f.token != "", f.tokensFile != "", f.channel != ""); n > 1 {
		fmt.Fprintln(c.stderr, "apnsctl send: give one of -token, -tokens-file and -channel")
		return ExitUsage
	}
	if f.tokensFile != "" || f.channel != "" {
		req, err := f.request()
		if err == nil && f.tokensFile != "" {
			var tokens []string
			if tokens, err = c.readTokens(f.tokensFile); err == nil {
				delete(req, "token")
				return c.multicast(req, tokens, f.asJSON)
			}
		}
		if err != nil {
			fmt.Fprintf(c.stderr, "apnsctl send: %v\n", err)
			return ExitUsage
		}
		delete(req, "token")
		req["channel_id"] = f.channel
		return c.sendOne(req, f.asJSON)
	}
	if f.token == "" {
		set := false
		fs.Visit(func(*flag.Flag) { set = true })
		if set {
			fmt.Fprintln(c.stderr, "apnsctl send: -token is required (or give no flags and pipe JSON request lines on stdin)")
			return ExitUsage
		}
		return c.bulk()
	}
	req, err := f.request()
	if err != nil {
		fmt.Fprintf(c.stderr, "apnsctl send: %v\n", err)
		return ExitUsage
	}
	return c.sendOne(req, f.asJSON)
}

// countSet counts the true values.
func countSet(bs ...bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// sendOne sends one request line and prints the answer.
func (c *cli) sendOne(req map[string]any, asJSON bool) int {
	ctx, cancel := c.ctx()
	defer cancel()
	req["deadline"] = c.deadline().UnixMilli()
	line, err := json.Marshal(req)
	if err != nil {
		fmt.Fprintf(c.stderr, "apnsctl send: %v\n", err)
		return ExitUsage
	}
	in := make(chan []byte, 1)
	in <- line
	close(in)
	var answer []byte
	if _, err := c.exchange(ctx, in, func(l []byte) { answer = l }); err != nil {
		return c.fail(err)
	}
	r := &ipc.Response{}
	if err := json.Unmarshal(answer, r); err != nil {
		return c.fail(fmt.Errorf("apnsd's answer %q: %w", answer, err))
	}
	code := exitFor(r)
	if asJSON {
		b, _ := json.Marshal(r)
		fmt.Fprintln(c.stdout, string(b))
		return code
	}
	switch {
	case r.Queued != nil:
		fmt.Fprintln(c.stdout, "queued")
	case r.OK:
		fmt.Fprintf(c.stdout, "delivered apns-id=%s\n", r.ApnsID)
	case r.Error != "":
		fmt.Fprintf(c.stderr, "refused by apnsd: %s: %s\n", r.Error, r.Message)
	default:
		msg := fmt.Sprintf("refused by APNs: %d %s apns-id=%s", r.Status, r.Reason, r.ApnsID)
		if r.Timestamp > 0 {
			msg += fmt.Sprintf(" (token invalid since %s)", time.UnixMilli(r.Timestamp).UTC().Format(time.RFC3339))
		}
		fmt.Fprintln(c.stderr, msg)
	}
	return code
}

func (f *sendFlags) request() (map[string]any, error) {
	req := map[string]any{"token": f.token}
	put := func(k, v string) {
		if v != "" {
			req[k] = v
		}
	}
	put("alert", f.alert)
	put("sound", f.sound)
	put("app", f.app)
	put("env", f.env)
	put("topic", f.topic)
	put("push_type", f.pushType)
	put("collapse_id", f.collapseID)
	put("apns_id", f.apnsID)
	if f.badge >= 0 {
		req["badge"] = f.badge
	}
	if f.priority != 0 {
		req["priority"] = f.priority
	}
	if f.expiration >= 0 {
		req["expiration"] = f.expiration
	}
	if f.noWait {
		req["wait"] = false
	}
	if f.payload != "" {
		data := []byte(f.payload)
		if name, ok := strings.CutPrefix(f.payload, "@"); ok {
			var err error
			if data, err = os.ReadFile(name); err != nil {
				return nil, fmt.Errorf("-payload: %w", err)
			}
		}
		if !json.Valid(data) {
			return nil, errors.New("-payload is not valid JSON")
		}
		req["payload"] = json.RawMessage(bytes.TrimSpace(data))
	}
	if _, ok := req["payload"]; !ok && f.alert == "" && f.sound == "" && f.badge < 0 {
		return nil, errors.New("nothing to send: give -alert, -badge, -sound or -payload")
	}
	return req, nil
}

func exitFor(r *ipc.Response) int {
	switch {
	case r.OK:
		return ExitOK
	case r.Error != "":
		return ExitRefused
	}
	return ExitAPNsRefused
}

// bulk pipelines stdin's request lines to apnsd and copies its answers to
// stdout, one per non-empty input line, in order (see exchange: deadline,
// retries, resending after a broken connection).
func (c *cli) bulk() int {
	ctx, cancel := c.ctx()
	defer cancel()
	deadline := c.deadline()
	in := make(chan []byte)
	readErr := make(chan error, 1)
	go func() {
		defer close(in)
		sc := bufio.NewScanner(c.stdin)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			line := bytes.TrimSpace(sc.Bytes())
			if len(line) == 0 {
				continue
			}
			select {
			case in <- withDeadline(bytes.Clone(line), deadline):
			case <-ctx.Done():
				readErr <- nil
				return
			}
		}
		readErr <- sc.Err()
	}()
	worst := ExitOK
	read := 0
	out := bufio.NewWriter(c.stdout)
	defer out.Flush()
	left, err := c.exchange(ctx, in, func(line []byte) {
		read++
		out.Write(line)
		out.WriteByte('\n')
		var r ipc.Response
		if json.Unmarshal(line, &r) == nil {
			worst = max(worst, exitFor(&r))
		}
	})
	if err != nil {
		out.Flush()
		fmt.Fprintf(c.stderr, "apnsctl: %d answer(s) written, %d line(s) left unanswered: %v\n", read, left, err)
		return ExitUnreachable
	}
	if err := <-readErr; err != nil {
		fmt.Fprintf(c.stderr, "apnsctl: reading stdin: %v\n", err)
		return max(worst, ExitUsage)
	}
	return worst
}

func (c *cli) status(args []string) int {
	fs := flag.NewFlagSet("apnsctl status", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	asJSON := fs.Bool("json", false, "print the status as JSON")
	if fs.Parse(args) != nil || fs.NArg() > 0 {
		return ExitUsage
	}
	ctx, cancel := c.ctx()
	defer cancel()
	r, err := c.client.Do(ctx, map[string]string{"op": "status"})
	if err != nil {
		return c.fail(err)
	}
	if e := r.Err(); e != nil {
		fmt.Fprintf(c.stderr, "apnsctl: status failed: %s: %s\n", e.Code, e.Message)
		return ExitRefused
	}
	if *asJSON {
		b, _ := json.MarshalIndent(r, "", "  ")
		fmt.Fprintln(c.stdout, string(b))
		return ExitOK
	}
	printStatus(c.stdout, r)
	return ExitOK
}

func printStatus(w io.Writer, r *ipc.Response) {
	s := r.StatusReport
	if s == nil {
		fmt.Fprintln(w, "apnsd sent no status")
		return
	}
	fmt.Fprintf(w, "apnsd %s, up %s, socket %s\n", r.Version, (time.Duration(s.UptimeSeconds) * time.Second).String(), s.Socket)
	if s.Config != "" {
		fmt.Fprintf(w, "config %s\n", s.Config)
	}
	if s.LastReloadError != "" {
		fmt.Fprintf(w, "LAST CONFIG RELOAD FAILED at %s (the previous config is in use): %s\n", s.LastReloadErrorAt.Format(time.RFC3339), s.LastReloadError)
	}
	q := s.Queue
	fmt.Fprintf(w, "queue: %d waiting, %d in flight (capacity %d); sent %d, failed %d, refused %d, retries %d\n",
		q.Depth, q.InFlight, q.Capacity, q.Sent, q.Failed, q.Refused, q.Retries)
	if sp := q.Spool; sp != nil {
		fmt.Fprintf(w, "spool: %d wait:false notification(s) kept until APNs answers (%d of %d bytes) in %s\n", sp.Pending, sp.Bytes, sp.MaxBytes, sp.Dir)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "APP\tENV\tSTATE\tCONNS\tAUTH\tEXPIRES\tCHANNELS\tSENT\tFAILED\tPROBLEM")
	var notes []string
	for _, a := range s.Apps {
		for _, e := range a.Envs {
			env := e.Env
			if env == a.DefaultEnv {
				env += "*"
			}
			expires := "-"
			if !e.NotAfter.IsZero() {
				expires = e.NotAfter.Format(time.DateOnly)
				if e.DaysLeft != nil {
					expires += fmt.Sprintf(" (%dd)", *e.DaysLeft)
				}
			} else if e.KeyID != "" {
				expires = "key " + e.KeyID
			}
			problem := "-"
			switch {
			case e.LastReloadError != "":
				problem = "reload failed (see below)"
				notes = append(notes, fmt.Sprintf("%s/%s: last reload failed at %s: %s", a.Name, e.Env, e.LastReloadErrorAt.Format(time.RFC3339), e.LastReloadError))
			case e.State != "up" && e.LastConnErr != "":
				problem = "cannot connect (see below)"
				notes = append(notes, fmt.Sprintf("%s/%s: %s", a.Name, e.Env, e.LastConnErr))
			case e.DaysLeft != nil && *e.DaysLeft < 30:
				problem = "certificate expires soon"
			}
			channels := "-" // unknown until a channel_list
			if e.Channels != nil {
				channels = fmt.Sprint(*e.Channels)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\t%s\t%s\t%d\t%d\t%s\n",
				a.Name, env, e.State, e.Connections, e.Target, e.Auth, expires, channels, e.Sent, e.Failed, problem)
		}
	}
	tw.Flush()
	for _, a := range s.Apps {
		for _, e := range a.Envs {
			if e.CertSubject != "" {
				fmt.Fprintf(w, "\n%s/%s: %s\n  loaded %s from %s", a.Name, e.Env, e.CertSubject, e.LoadedAt.Format(time.RFC3339), strings.Join(e.Files, ", "))
			}
			if e.KeyID != "" {
				fmt.Fprintf(w, "\n%s/%s: token key %s (team %s)\n  loaded %s from %s", a.Name, e.Env, e.KeyID, e.TeamID, e.LoadedAt.Format(time.RFC3339), strings.Join(e.Files, ", "))
			}
			if e.ManageEndpoint != "" && e.ManageState != "idle" {
				fmt.Fprintf(w, "\n%s/%s: channel management %s: %s", a.Name, e.Env, e.ManageEndpoint, e.ManageState)
			}
		}
	}
	fmt.Fprintln(w)
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintln(w, n)
		}
	}
	fmt.Fprintln(w, "\n(* = the app's default environment)")
}

// check runs apnsd -check on a config file: apnsd's own loaders are the
// only judge of its config and credentials, and apnsctl does not link them
// (it speaks only the socket protocol). apnsd is looked for next to apnsctl,
// then on PATH, unless -apnsd names it.
func (c *cli) check(args []string) int {
	fs := flag.NewFlagSet("apnsctl check", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	path := fs.String("config", defaults.ConfigPath, "config file to check")
	bin := fs.String("apnsd", "", "the apnsd binary to check with (default: apnsd next to apnsctl, else on PATH)")
	if fs.Parse(args) != nil || fs.NArg() > 0 {
		return ExitUsage
	}
	apnsd, err := findApnsd(*bin)
	if err != nil {
		fmt.Fprintf(c.stderr, "apnsctl: %v\n", err)
		return ExitRefused
	}
	cmd := exec.Command(apnsd, "-check", "-config", *path)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, c.stdout, c.stderr
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ee) && ee.ExitCode() == apnsdExitConfig:
		return ExitRefused // apnsd said why on stderr
	default:
		fmt.Fprintf(c.stderr, "apnsctl: %s -check: %v\n", apnsd, err)
		return ExitRefused
	}
}

// apnsdExitConfig is apnsd's exit code for an invalid config (cli.ExitConfig).
const apnsdExitConfig = 3

// findApnsd returns the apnsd binary to run: bin if set, else apnsd in
// apnsctl's own directory, else apnsd on PATH.
func findApnsd(bin string) (string, error) {
	if bin != "" {
		return bin, nil
	}
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "apnsd")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	p, err := exec.LookPath("apnsd")
	if err != nil {
		return "", fmt.Errorf("check runs apnsd -check, but apnsd is neither next to apnsctl nor on PATH (give -apnsd PATH): %w", err)
	}
	return p, nil
}

// unregistered lists the records of the unregistered file: tokens APNs
// answered 410 for, which apps should delete.
func (c *cli) unregistered(args []string) int {
	fs := flag.NewFlagSet("apnsctl unregistered", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	path := fs.String("file", "", "the unregistered file (default: ask apnsd for its unregistered_file)")
	since := fs.Duration("since", 0, "only records newer than this (e.g. 24h)")
	app := fs.String("app", "", "only this app")
	asJSON := fs.Bool("json", false, "print the records as JSON lines")
	if fs.Parse(args) != nil || fs.NArg() > 0 {
		return ExitUsage
	}
	if *path == "" {
		ctx, cancel := c.ctx()
		defer cancel()
		r, err := c.client.Do(ctx, map[string]string{"op": "status"})
		if err != nil {
			return c.fail(err)
		}
		if r.StatusReport == nil || r.StatusReport.Unregistered == "" {
			fmt.Fprintln(c.stderr, "apnsctl: apnsd has no unregistered_file configured (set it in apnsd.toml, or give -file)")
			return ExitRefused
		}
		*path = r.StatusReport.Unregistered
	}
	f, err := os.Open(*path)
	if err != nil {
		fmt.Fprintf(c.stderr, "apnsctl: %v\n", err)
		return ExitRefused
	}
	defer f.Close()
	cutoff := time.Time{}
	if *since > 0 {
		cutoff = time.Now().Add(-*since)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	if !*asJSON {
		fmt.Fprintln(tw, "TIME\tAPP\tENV\tREASON\tINVALID SINCE\tTOKEN")
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		var rec ipc.UnregisteredRecord
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			fmt.Fprintf(c.stderr, "apnsctl: %s:%d: not a record: %v\n", *path, n, err)
			continue
		}
		if rec.Time.Before(cutoff) || (*app != "" && rec.App != *app) {
			continue
		}
		if *asJSON {
			fmt.Fprintln(c.stdout, sc.Text())
			continue
		}
		invalid := "-"
		if rec.Timestamp > 0 {
			invalid = time.UnixMilli(rec.Timestamp).UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", rec.Time.UTC().Format(time.RFC3339), rec.App, rec.Env, rec.Reason, invalid, rec.Token)
	}
	tw.Flush()
	if err := sc.Err(); err != nil {
		fmt.Fprintf(c.stderr, "apnsctl: reading %s: %v\n", *path, err)
		return ExitRefused
	}
	return ExitOK
}
