package daemon

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/apnsd/apnsd/internal/apnstest"
)

// BenchmarkSocketSend measures sends over the socket with C connections
// each keeping W requests outstanding, against the stand-in answering at
// once (or, "apns-holds", never): "wait":false (answered once the spool has fdatasync'ed the record,
// in a state_dir under TMPDIR) and "wait":true (answered once APNs has
// answered). It reports answers per second and the latency from writing a
// line to reading its answer (p50, p99). Printed, not asserted:
//
//	go test -run '^$' -bench BenchmarkSocketSend -benchtime 20000x ./internal/daemon
func BenchmarkSocketSend(b *testing.B) {
	for _, mode := range []string{"wait=false", "wait=false,apns-holds", "wait=true"} {
		wait := mode == "wait=true"
		for _, shape := range []struct{ conns, window int }{{1, 1}, {1, 64}, {4, 64}} {
			b.Run(fmt.Sprintf("%s/%dx%d", mode, shape.conns, shape.window), func(b *testing.B) {
				h := newHarness(b, harnessOpts{top: "queue_size = 1000000\nlog_level = \"warn\""})
				if mode == "wait=false,apns-holds" {
					// APNs never answers: the acknowledgements measure the
					// spool path alone, without the delivery's CPU.
					release := make(chan struct{})
					h.sandbox.SetResponder(func(*apnstest.Request) apnstest.Reply { <-release; return apnstest.Reply{} })
					b.Cleanup(func() { close(release) })
				}
				perConn := max(b.N/shape.conns, 1)
				lat := make([][]time.Duration, shape.conns)
				var wg sync.WaitGroup
				b.ResetTimer()
				start := time.Now()
				for ci := range shape.conns {
					nc, err := net.Dial("unix", h.sock)
					must(b, err)
					defer nc.Close()
					sent := make(chan time.Time, shape.window)
					wg.Add(2)
					go func() {
						defer wg.Done()
						bw := bufio.NewWriter(nc)
						for i := range perConn {
							sent <- time.Now()
							fmt.Fprintf(bw, `{"token":"%02x%06x","alert":"x","wait":%v}`+"\n", ci, i, wait)
							if len(sent) == cap(sent) || i == perConn-1 || shape.window == 1 {
								bw.Flush()
							}
						}
						close(sent)
					}()
					go func() {
						defer wg.Done()
						br := bufio.NewReader(nc)
						for at := range sent {
							line, err := br.ReadSlice('\n')
							if err != nil {
								b.Errorf("read: %v", err)
								return
							}
							if wait && !bytes.Contains(line, []byte(`"ok":true`)) || !wait && !bytes.Contains(line, []byte(`"queued":true`)) {
								b.Errorf("answer %s", line)
								return
							}
							lat[ci] = append(lat[ci], time.Since(at))
						}
					}()
				}
				wg.Wait()
				el := time.Since(start)
				b.StopTimer()
				all := slices.Concat(lat...)
				slices.Sort(all)
				if len(all) == 0 {
					return
				}
				b.ReportMetric(float64(len(all))/el.Seconds(), "answers/s")
				b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
				if sp := h.d.Status().Queue.Spool; sp != nil && sp.Syncs > 0 && !wait {
					b.ReportMetric(float64(sp.Appends)/float64(sp.Syncs), "records/fsync")
				}
			})
		}
	}
}
