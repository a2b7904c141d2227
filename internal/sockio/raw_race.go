//go:build linux && race

package sockio

import (
	"errors"
	"syscall"
)

// Under the race detector the calls go through syscall.Read and
// syscall.Write: besides the system call they tell the detector that a
// write to a descriptor happens before a read of it (net's I/O does the
// same), which is how a test's goroutines that talk over a socket are
// ordered. Without it every value handed over through a socket would be
// reported as a race. Everything else in Conn is the same in both builds.
func sysRead(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Read(int(fd), p)
	return n, errnoOf(err)
}

func sysWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Write(int(fd), p)
	return n, errnoOf(err)
}

func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}
