package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apnsd/apnsd/internal/apnstest"
	"github.com/apnsd/apnsd/internal/ipc"
)

// TestMain lets this test binary play a child process that appends to an
// unregistered_file under a file size limit (RLIMIT_FSIZE), which cannot
// be set for one goroutine.
func TestMain(m *testing.M) {
	if path := os.Getenv("APNSD_UNREGISTERED_CHILD"); path != "" {
		os.Exit(unregisteredChild(path))
	}
	os.Exit(m.Run())
}

func unregisteredChild(path string) int {
	limit, _ := strconv.ParseUint(os.Getenv("APNSD_FSIZE"), 10, 64)
	signal.Ignore(syscall.SIGXFSZ) // EFBIG instead of death, as under a full disk
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: limit, Max: limit}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	u, err := openUnregistered(path, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for i := range 200 {
		u.add(ipc.UnregisteredRecord{Time: time.Now().UTC(), App: "app", Env: "sandbox", Token: fmt.Sprintf("%064x", i), Reason: "Unregistered", Timestamp: int64(i), ApnsID: apnsID(i)})
	}
	u.close()
	return 0
}

func apnsID(i int) string { return fmt.Sprintf("00000000-0000-0000-0000-%012d", i) }

// readRecords parses a JSON Lines file strictly: every line a record.
func readRecords(t *testing.T, path string) []ipc.UnregisteredRecord {
	t.Helper()
	f, err := os.Open(path)
	must(t, err)
	defer f.Close()
	var recs []ipc.UnregisteredRecord
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r ipc.UnregisteredRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("%s line %d is not a record: %q", path, len(recs)+1, sc.Text())
		}
		recs = append(recs, r)
	}
	return recs
}

// TestUnregisteredFileFull: appends that hit the file size limit (EFBIG,
// as ENOSPC on a full disk) leave no torn record, the file ends on a whole
// line, and the failures are logged aggregated, not once each.
func TestUnregisteredFileFull(t *testing.T) {
	path := filepath.Join(t.TempDir(), "unregistered.jsonl")
	const limit = 2000
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "APNSD_UNREGISTERED_CHILD="+path, "APNSD_FSIZE="+strconv.Itoa(limit))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	recs := readRecords(t, path)
	data, err := os.ReadFile(path)
	must(t, err)
	if len(recs) == 0 || len(data) > limit || !strings.HasSuffix(string(data), "}\n") {
		t.Errorf("%d records, %d bytes (limit %d), ends %q", len(recs), len(data), limit, data[max(0, len(data)-10):])
	}
	for i, r := range recs {
		if r.ApnsID != apnsID(i) {
			t.Errorf("record %d is %s", i, r.ApnsID)
		}
	}
	if n := strings.Count(string(out), "cannot append to unregistered_file"); n < 1 || n > 2 {
		t.Errorf("%d log lines for %d failed appends, want 1 (+1 with the count):\n%s", n, 200-len(recs), out)
	}
	if !strings.Contains(string(out), "repeated=") {
		t.Errorf("the aggregated line has no count:\n%s", out)
	}
	t.Logf("%d records fit in %d bytes; the rest failed with one log line:\n%s", len(recs), limit, out)
}

// TestUnregisteredFileRotation: mode 0640 under umask 0077; after the file
// is moved away (logrotate), a reload (SIGHUP and the reload op share it)
// reopens the path and new records go to the new file.
func TestUnregisteredFileRotation(t *testing.T) {
	dir := shortTempDir(t)
	file := filepath.Join(dir, "unregistered.jsonl")
	old := syscall.Umask(0o077)
	h := newHarness(t, harnessOpts{top: fmt.Sprintf("unregistered_file = %q", file)})
	syscall.Umask(old)
	h.sandbox.SetResponder(apnstest.DemoResponder)
	fi, err := os.Stat(file)
	must(t, err)
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("unregistered_file mode %v under umask 0077, want 0640", fi.Mode().Perm())
	}
	c := h.dial()
	if m := c.do(`{"token":"0410aa01","alert":"x"}`); m["status"] != float64(410) {
		t.Fatal(m)
	}
	must(t, os.Rename(file, file+".1"))
	if m := c.do(`{"token":"0410aa02","alert":"x"}`); m["status"] != float64(410) {
		t.Fatal(m)
	}
	if _, err := h.d.Reload(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if m := c.do(`{"token":"0410aa03","alert":"x"}`); m["status"] != float64(410) {
		t.Fatal(m)
	}
	rotated, current := readRecords(t, file+".1"), readRecords(t, file)
	if len(rotated) != 2 || len(current) != 1 || current[0].Token != "0410aa03" {
		t.Errorf("rotated file %+v, new file %+v; want the first two, then the third", rotated, current)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("reopened file: %v %v, want mode 0640", fi.Mode(), err)
	}
}
