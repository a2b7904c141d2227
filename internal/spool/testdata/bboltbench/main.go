// Command bboltbench compares the spool's segment log with go.etcd.io/bbolt
// under the daemon's load shape: N concurrent appenders, each storing a
// record, waiting until it is durable, then deleting it (APNs answered).
// It lives in its own module so that apnsd does not depend on bbolt.
//
//	cd internal/spool/testdata/bboltbench && go run . -dir /tmp
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"log"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apnsd/apnsd/internal/spool"
	bolt "go.etcd.io/bbolt"
)

func main() {
	dir := flag.String("dir", os.TempDir(), "directory for the stores")
	dur := flag.Duration("d", 3*time.Second, "duration of each run")
	size := flag.Int("size", 512, "record size in bytes")
	ns := flag.String("appenders", "1,64,256", "comma-separated appender counts")
	which := flag.String("stores", "spool,bbolt,bbolt-1ms", "stores to measure")
	flag.Parse()
	fmt.Printf("%-10s %9s %11s %10s %14s %9s %9s\n", "store", "appenders", "appends/s", "fsyncs/s", "records/fsync", "p50", "p99")
	for _, store := range strings.Split(*which, ",") {
		for _, f := range strings.Split(*ns, ",") {
			n, err := strconv.Atoi(f)
			if err != nil {
				log.Fatal(err)
			}
			d, err := os.MkdirTemp(*dir, "bboltbench")
			if err != nil {
				log.Fatal(err)
			}
			var r result
			switch store {
			case "spool":
				r = runSpool(d, n, *size, *dur)
			case "bbolt":
				r = runBolt(d, n, *size, *dur, 10*time.Millisecond) // bbolt's default MaxBatchDelay
			case "bbolt-1ms":
				r = runBolt(d, n, *size, *dur, time.Millisecond)
			default:
				log.Fatalf("unknown store %q", store)
			}
			os.RemoveAll(d)
			fmt.Printf("%-10s %9d %11.0f %10.0f %14.1f %9s %9s\n", store, n,
				float64(r.appends)/r.el.Seconds(), float64(r.syncs)/r.el.Seconds(),
				float64(r.appends)/float64(max(r.syncs, 1)),
				r.p(50).Round(time.Microsecond), r.p(99).Round(time.Microsecond))
		}
	}
}

type result struct {
	appends, syncs uint64
	el             time.Duration
	lats           []time.Duration
}

func (r *result) p(q int) time.Duration {
	if len(r.lats) == 0 {
		return 0
	}
	return r.lats[min(len(r.lats)-1, len(r.lats)*q/100)]
}

// drive runs n workers calling op until dur has passed, timing each call.
func drive(n int, dur time.Duration, op func(w int) error) result {
	var wg sync.WaitGroup
	var stop atomic.Bool
	lats := make([][]time.Duration, n)
	start := time.Now()
	for w := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				t0 := time.Now()
				if err := op(w); err != nil {
					log.Fatal(err)
				}
				lats[w] = append(lats[w], time.Since(t0))
			}
		}()
	}
	time.Sleep(dur)
	stop.Store(true)
	wg.Wait()
	all := slices.Concat(lats...)
	slices.Sort(all)
	return result{appends: uint64(len(all)), el: time.Since(start), lats: all}
}

func runSpool(dir string, n, size int, dur time.Duration) result {
	s, _, err := spool.Open(spool.Options{Dir: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	data := make([]byte, size)
	chs := make([]chan error, n)
	for i := range chs {
		chs[i] = make(chan error, 1)
	}
	r := drive(n, dur, func(w int) error {
		ch := chs[w]
		id, err := s.Append(data, func(_ uint64, err error) { ch <- err })
		if err != nil {
			return err
		}
		if err := <-ch; err != nil {
			return err
		}
		s.Done(id)
		return nil
	})
	r.syncs = s.Stats().Syncs
	return r
}

// runBolt stores each record with DB.Batch (bbolt's group commit: calls
// within MaxBatchDelay share one transaction) and deletes finished records
// in the next batch, as the spool writes its done markers with the next
// commit. A bbolt commit fdatasyncs twice (data pages, then the meta page).
func runBolt(dir string, n, size int, dur time.Duration, delay time.Duration) result {
	db, err := bolt.Open(dir+"/spool.db", 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	db.MaxBatchDelay = delay
	bucket := []byte("spool")
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket(bucket); return err }); err != nil {
		log.Fatal(err)
	}
	var (
		nextID  atomic.Uint64
		mu      sync.Mutex
		done    [][]byte
		commits sync.Map
	)
	data := make([]byte, size)
	r := drive(n, dur, func(int) error {
		var key [8]byte
		binary.BigEndian.PutUint64(key[:], nextID.Add(1))
		err := db.Batch(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucket)
			mu.Lock()
			del := done
			done = nil
			mu.Unlock()
			for _, k := range del {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			commits.Store(tx.ID(), true)
			return b.Put(key[:], data)
		})
		if err != nil {
			return err
		}
		mu.Lock()
		done = append(done, key[:])
		mu.Unlock()
		return nil
	})
	c := 0
	commits.Range(func(any, any) bool { c++; return true })
	r.syncs = uint64(2 * c)
	return r
}
