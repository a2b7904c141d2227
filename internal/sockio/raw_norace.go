//go:build linux && !race

package sockio

import (
	"syscall"
	"unsafe"
)

// sysRead is read(2) as a raw system call: the P stays with the goroutine
// and sysmon never sees it.
func sysRead(fd uintptr, p []byte) (int, syscall.Errno) {
	r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(r), e
}

// sysWrite is write(2) as a raw system call (see sysRead). len(p) > 0.
func sysWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(r), e
}
