package spool

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The crash test re-executes the test binary as a child (crashChild) that
// appends and acknowledges under load until the parent SIGKILLs it.
const crashEnv = "SPOOL_CRASH_CHILD_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashEnv); dir != "" {
		crashChild(dir, os.Getenv("SPOOL_CRASH_GEN"))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const (
	crashSegBytes = 16 << 10
	crashMaxBytes = 8 << 20
)

// crashData is the record for key: its content is checkable on replay.
func crashData(key string) []byte {
	n := 0
	for _, c := range key {
		n = n*31 + int(c)
	}
	n = n % 300
	if n < 0 {
		n = -n
	}
	return []byte(key + "|" + strings.Repeat(string(rune('a'+n%26)), n))
}

// crashChild prints, on stdout:
//
//	C <offset> <truncated>   a corruption Open reported
//	A <id> <key>             the record's durability was signalled (async)
//	D <id>                   Done(id) is about to be called (written before the call)
func crashChild(dir, gen string) {
	var outMu sync.Mutex
	out := bufio.NewWriterSize(os.Stdout, 64<<10)
	writeNow := func(line string) {
		outMu.Lock()
		out.WriteString(line)
		out.Flush()
		outMu.Unlock()
	}
	s, rec, err := Open(Options{Dir: dir, SegmentBytes: crashSegBytes, MaxBytes: crashMaxBytes})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(2)
	}
	for _, c := range rec.Corruptions {
		writeNow(fmt.Sprintf("C %d %v\n", c.Offset, c.Truncated))
	}
	for i, r := range rec.Records {
		if i%2 == 0 {
			writeNow(fmt.Sprintf("D %d\n", r.ID))
			s.Done(r.ID)
		}
	}
	acks := make(chan string, 1<<16)
	go func() {
		for l := range acks {
			outMu.Lock()
			out.WriteString(l)
			for len(acks) > 0 {
				out.WriteString(<-acks)
			}
			out.Flush()
			outMu.Unlock()
		}
	}()
	const workers = 64
	for w := range workers {
		go func() {
			for i := 0; ; i++ {
				key := fmt.Sprintf("g%s-w%d-i%d", gen, w, i)
				ch := make(chan error, 1)
				id, err := s.Append(crashData(key), func(id uint64, err error) {
					if err == nil {
						acks <- fmt.Sprintf("A %d %s\n", id, key)
					}
					ch <- err
				})
				if errors.Is(err, ErrFull) {
					time.Sleep(time.Millisecond)
					continue
				}
				if err != nil {
					fmt.Fprintln(os.Stderr, "child append:", err)
					os.Exit(2)
				}
				if err := <-ch; err != nil {
					fmt.Fprintln(os.Stderr, "child durability:", err)
					os.Exit(2)
				}
				if i%4 != 0 { // three in four are answered by "APNs"
					writeNow(fmt.Sprintf("D %d\n", id))
					s.Done(id)
				}
			}
		}()
	}
	select {}
}

type crashState struct {
	mu      sync.Mutex
	acked   map[uint64]string // id -> key, durability signalled
	done    map[uint64]bool   // Done was (or was about to be) called
	corrupt []string
	genAcks int
}

func (cs *crashState) read(t *testing.T, r *bufio.Scanner) {
	for r.Scan() {
		f := strings.Fields(r.Text())
		cs.mu.Lock()
		switch {
		case len(f) == 3 && f[0] == "A":
			id, _ := strconv.ParseUint(f[1], 10, 64)
			cs.acked[id] = f[2]
			cs.genAcks++
		case len(f) == 2 && f[0] == "D":
			id, _ := strconv.ParseUint(f[1], 10, 64)
			cs.done[id] = true
		case len(f) == 3 && f[0] == "C":
			cs.corrupt = append(cs.corrupt, r.Text())
		default:
			t.Errorf("child printed %q", r.Text())
		}
		cs.mu.Unlock()
	}
}

// TestCrashSafety SIGKILLs a child that appends and acknowledges under load
// (64 appenders, small segments so that rolls and compaction run all the
// time), several generations in a row, and checks after each kill that every
// record whose durability was signalled and that was not marked done is
// replayed, with its data intact. Between generations it also tears the tail
// of the newest segment by hand; the next child must report and skip it.
func TestCrashSafety(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "state")
	cs := &crashState{acked: map[uint64]string{}, done: map[uint64]bool{}}
	const gens = 4
	for gen := range gens {
		cs.mu.Lock()
		cs.genAcks, cs.corrupt = 0, nil
		cs.mu.Unlock()
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), crashEnv+"="+dir, fmt.Sprintf("SPOOL_CRASH_GEN=%d", gen))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		readDone := make(chan struct{})
		go func() {
			defer close(readDone)
			sc := bufio.NewScanner(stdout)
			cs.read(t, sc)
		}()
		// Kill after a few thousand acknowledgements (or 60 s on a very
		// loaded machine), at a moment unrelated to the commit cycle.
		deadline := time.Now().Add(60 * time.Second)
		for {
			cs.mu.Lock()
			n := cs.genAcks
			cs.mu.Unlock()
			if n >= 3000+gen*500 || time.Now().After(deadline) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(time.Duration(gen*7) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-readDone
		werr := cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("gen %d: child did not die of SIGKILL: %v\nstderr: %s", gen, werr, stderr.String())
		}

		cs.mu.Lock()
		genAcks, corrupt := cs.genAcks, cs.corrupt
		cs.mu.Unlock()
		if genAcks == 0 {
			t.Fatalf("gen %d: child acknowledged nothing; stderr: %s", gen, stderr.String())
		}
		if gen > 0 && len(corrupt) == 0 {
			t.Errorf("gen %d: child did not report the torn tail injected before it", gen)
		}
		for _, c := range corrupt {
			if !strings.HasSuffix(c, " true") {
				t.Errorf("gen %d: child reported damage in the middle of a segment: %s", gen, c)
			}
		}

		// Verify with a fresh Open, as the restarted daemon would.
		s, rec, err := Open(Options{Dir: dir, SegmentBytes: crashSegBytes, MaxBytes: crashMaxBytes})
		if err != nil {
			t.Fatalf("gen %d: reopen: %v", gen, err)
		}
		for _, c := range rec.Corruptions {
			// SIGKILL can cut a write short: only a torn tail is acceptable.
			if !c.Truncated {
				t.Errorf("gen %d: damage in the middle after SIGKILL: %+v", gen, c)
			}
			t.Logf("gen %d: torn tail after SIGKILL: %+v", gen, c)
		}
		replayed := map[uint64]bool{}
		var last uint64
		for _, r := range rec.Records {
			if r.ID <= last {
				t.Fatalf("gen %d: replay out of order: %d after %d", gen, r.ID, last)
			}
			last = r.ID
			replayed[r.ID] = true
			key, _, _ := bytes.Cut(r.Data, []byte("|"))
			if !bytes.Equal(r.Data, crashData(string(key))) {
				t.Fatalf("gen %d: record %d has damaged data %q", gen, r.ID, r.Data)
			}
			cs.mu.Lock()
			if k, ok := cs.acked[r.ID]; ok && k != string(key) {
				t.Fatalf("gen %d: record %d holds %q, acknowledged as %q", gen, r.ID, key, k)
			}
			cs.mu.Unlock()
		}
		lost, required := 0, 0
		cs.mu.Lock()
		for id := range cs.acked {
			if cs.done[id] {
				continue
			}
			required++
			if !replayed[id] {
				lost++
				if lost <= 5 {
					t.Errorf("gen %d: record %d (%s) was acknowledged durable, never done, and is not replayed", gen, id, cs.acked[id])
				}
			}
		}
		cs.mu.Unlock()
		st := s.Stats()
		t.Logf("gen %d: %d acknowledged this generation; %d required, %d replayed, %d lost; %d segments, %d bytes on disk",
			gen, genAcks, required, len(rec.Records), lost, st.Segments, st.DiskBytes)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if lost > 0 {
			t.FailNow()
		}
		if gen < gens-1 {
			// Tear the tail of the newest segment holding entries: a record
			// whose body was cut short, as a crash in mid-write leaves it.
			tearNewest(t, dir)
		}
	}
}

// tearNewest appends a partial entry to the newest segment that has more
// than a header (the verifying Open's own segment is empty).
func tearNewest(t *testing.T, dir string) {
	t.Helper()
	segs := segFiles(t, dir)
	for i := len(segs) - 1; i >= 0; i-- {
		fi, err := os.Stat(segs[i])
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() == segHeaderSize && i > 0 {
			continue
		}
		torn := appendEntry(nil, kindRecord, 1<<62, []byte("cut short by a crash"))
		f, err := os.OpenFile(segs[i], os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(torn[:len(torn)-5]); err != nil {
			t.Fatal(err)
		}
		f.Close()
		return
	}
}
