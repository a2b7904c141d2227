package cli

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
)

// startProfiles is a developer's aid for docs/performance.md, off unless
// the environment asks: APNSD_CPUPROFILE=file writes a CPU profile of the
// whole run, APNSD_ALLOCPROFILE=file an allocation profile (every
// allocation sampled at 1 in 512 bytes), both at exit. The returned
// function writes and closes them.
func startProfiles(stderr io.Writer) (stop func()) {
	var stops []func()
	if path := os.Getenv("APNSD_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintf(stderr, "apnsd: APNSD_CPUPROFILE: %v\n", err)
		} else {
			stops = append(stops, func() { pprof.StopCPUProfile(); f.Close() })
		}
	}
	if path := os.Getenv("APNSD_ALLOCPROFILE"); path != "" {
		runtime.MemProfileRate = 512
		stops = append(stops, func() {
			f, err := os.Create(path)
			if err == nil {
				err = pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
			if err != nil {
				fmt.Fprintf(stderr, "apnsd: APNSD_ALLOCPROFILE: %v\n", err)
			}
		})
	}
	return func() {
		for _, s := range stops {
			s()
		}
	}
}
