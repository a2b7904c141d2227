package ctl

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/apnsd/apnsd/internal/ipc"
)

// Multicast batches: apnsd takes at most ipc.MaxMulticastTokens tokens per
// line, and a line must stay under socket.max_line_bytes (128 KiB by
// default); batches are cut at either bound.
const multicastLineBudget = 100 << 10

// readTokens reads one token a line from path ("-" for stdin); blank lines
// and lines starting with '#' are skipped. Tokens are sent as written:
// apnsd cleans them and answers a malformed one in its own entry.
func (c *cli) readTokens(path string) ([]string, error) {
	r := c.stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	var tokens []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		t := strings.TrimSpace(sc.Text())
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		tokens = append(tokens, t)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(tokens) == 0 {
		return nil, fmt.Errorf("%s has no tokens (one a line)", path)
	}
	return tokens, nil
}

// batches cuts tokens into multicast batches of at most
// ipc.MaxMulticastTokens tokens and about multicastLineBudget bytes.
func batches(tokens []string, overhead int) [][]string {
	var out [][]string
	var cur []string
	size := overhead
	for _, t := range tokens {
		n := len(t) + 3 // quotes and comma
		if len(cur) > 0 && (len(cur) == ipc.MaxMulticastTokens || size+n > multicastLineBudget) {
			out = append(out, cur)
			cur, size = nil, overhead
		}
		cur = append(cur, t)
		size += n
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// multicast sends req to every token, pipelining one line per batch on one
// connection, and prints one line per token in the order given (or, with
// asJSON, apnsd's answer lines). The exit code is the most severe seen.
func (c *cli) multicast(req map[string]any, tokens []string, asJSON bool) int {
	base, _ := json.Marshal(req)
	bs := batches(tokens, len(base)+16)
	ctx, cancel := c.ctx()
	defer cancel()
	cn, err := c.client.Connect(ctx)
	if err != nil {
		return c.fail(err)
	}
	defer cn.Close()
	if dl, ok := ctx.Deadline(); ok {
		cn.SetDeadline(dl)
	}
	werr := make(chan error, 1)
	go func() {
		for _, b := range bs {
			req["tokens"] = b
			if err := cn.Write(req); err != nil {
				werr <- err
				return
			}
		}
		werr <- nil
	}()
	worst := ExitOK
	sent, failed, queued := 0, 0, 0
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	defer tw.Flush()
	for i, b := range bs {
		line, err := cn.ReadLine()
		if err != nil {
			tw.Flush()
			fmt.Fprintf(c.stderr, "apnsctl: connection to apnsd ended after %d of %d batches: %v\n", i, len(bs), err)
			return ExitUnreachable
		}
		if asJSON {
			fmt.Fprintln(tw, string(line))
		}
		var r ipc.Response
		if err := json.Unmarshal(line, &r); err != nil {
			fmt.Fprintf(c.stderr, "apnsctl: apnsd answered %q: %v\n", line, err)
			return ExitUnreachable
		}
		worst = max(worst, exitFor(&r))
		switch {
		case r.MulticastReport != nil:
			for _, e := range r.Results {
				if e.OK {
					sent++
				} else {
					failed++
					worst = max(worst, entryExit(&e))
				}
				if e.Queued {
					queued++
				}
				if !asJSON {
					fmt.Fprintf(tw, "%s\t%s\n", e.Token, describeEntry(&e))
				}
			}
		case r.Queued != nil && r.OK:
			queued += len(b)
			if !asJSON {
				for _, t := range b {
					fmt.Fprintf(tw, "%s\tqueued\n", t)
				}
			}
		default: // the whole batch refused
			failed += len(b)
			if !asJSON {
				for _, t := range b {
					fmt.Fprintf(tw, "%s\trefused by apnsd: %s: %s\n", t, r.Error, r.Message)
				}
			}
		}
	}
	if err := <-werr; err != nil {
		fmt.Fprintf(c.stderr, "apnsctl: writing to apnsd: %v\n", err)
		return ExitUnreachable
	}
	tw.Flush()
	if queued > 0 {
		fmt.Fprintf(c.stderr, "%d tokens: %d queued, %d failed\n", len(tokens), queued, failed)
	} else {
		fmt.Fprintf(c.stderr, "%d tokens: %d delivered, %d failed\n", len(tokens), sent, failed)
	}
	return worst
}

func entryExit(e *ipc.TokenResult) int {
	if e.Error != "" {
		return ExitRefused
	}
	return ExitAPNsRefused
}

func describeEntry(e *ipc.TokenResult) string {
	switch {
	case e.Queued:
		return "queued"
	case e.OK:
		return "delivered apns-id=" + e.ApnsID
	case e.Error != "":
		return fmt.Sprintf("refused by apnsd: %s: %s", e.Error, e.Message)
	}
	s := fmt.Sprintf("refused by APNs: %d %s apns-id=%s", e.Status, e.Reason, e.ApnsID)
	if e.Timestamp > 0 {
		s += fmt.Sprintf(" (token invalid since %s)", time.UnixMilli(e.Timestamp).UTC().Format(time.RFC3339))
	}
	return s
}

const channelUsage = `usage: apnsctl channel create|get|list|delete [flags]

  create -storage none|latest   make a broadcast channel; prints its id
  get    -id ID                 show a channel's storage policy
  list                          list the app's channel ids, one a line
  delete -id ID                 delete a channel (irreversible: subscribed
                                Live Activities get no more updates)

Flags (each subcommand): -app NAME, -env sandbox|production, -json.
Send on a channel with: apnsctl send -channel ID -payload '{"aps":{"event":"update",...}}'
`

// channel runs apnsctl channel SUBCOMMAND.
func (c *cli) channel(args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "help" || args[0] == "-help" {
		fmt.Fprint(c.stderr, channelUsage)
		if len(args) == 0 {
			return ExitUsage
		}
		return ExitOK
	}
	sub := args[0]
	switch sub {
	case "create", "get", "list", "delete":
	default:
		fmt.Fprintf(c.stderr, "apnsctl channel: unknown subcommand %q\n%s", sub, channelUsage)
		return ExitUsage
	}
	fs := flag.NewFlagSet("apnsctl channel "+sub, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	app := fs.String("app", "", "configured app name (needed when more than one app is configured)")
	env := fs.String("env", "", "sandbox or production (default: the app's default)")
	asJSON := fs.Bool("json", false, "print apnsd's answer as JSON")
	var id, storage *string
	if sub == "get" || sub == "delete" {
		id = fs.String("id", "", "the channel id (required)")
	}
	if sub == "create" {
		storage = fs.String("storage", "", `message storage policy (required): "none" (nothing stored; sends use expiration 0) or "latest" (the most recent message is kept for devices that were offline)`)
	}
	if fs.Parse(args[1:]) != nil {
		return ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(c.stderr, "apnsctl channel %s: unexpected argument %q\n", sub, fs.Arg(0))
		return ExitUsage
	}
	req := map[string]any{"op": "channel_" + sub}
	if *app != "" {
		req["app"] = *app
	}
	if *env != "" {
		req["env"] = *env
	}
	if id != nil {
		if *id == "" {
			fmt.Fprintf(c.stderr, "apnsctl channel %s: -id is required\n", sub)
			return ExitUsage
		}
		req["channel_id"] = *id
	}
	if storage != nil {
		if *storage == "" {
			fmt.Fprintln(c.stderr, "apnsctl channel create: -storage none|latest is required")
			return ExitUsage
		}
		req["storage"] = *storage
	}
	ctx, cancel := c.ctx()
	defer cancel()
	r, err := c.client.Do(ctx, req)
	if err != nil {
		return c.fail(err)
	}
	code := exitFor(r)
	if *asJSON {
		b, _ := json.Marshal(r)
		fmt.Fprintln(c.stdout, string(b))
		return code
	}
	switch {
	case r.Error != "":
		fmt.Fprintf(c.stderr, "refused by apnsd: %s: %s\n", r.Error, r.Message)
		return code
	case !r.OK:
		fmt.Fprintf(c.stderr, "refused by APNs: %d %s\n", r.Status, r.Reason)
		return code
	}
	rep := r.ChannelReport
	if rep == nil {
		rep = &ipc.ChannelReport{}
	}
	switch sub {
	case "create":
		fmt.Fprintln(c.stdout, rep.ChannelID)
	case "get":
		fmt.Fprintf(c.stdout, "channel %s: storage %s, push type %s\n", *id, rep.Storage, rep.PushType)
	case "list":
		if rep.Channels != nil {
			for _, ch := range *rep.Channels {
				fmt.Fprintln(c.stdout, ch)
			}
		}
	case "delete":
		fmt.Fprintf(c.stdout, "deleted channel %s\n", *id)
	}
	return code
}
