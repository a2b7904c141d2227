// Package sockio reads and writes sockets with raw system calls.
//
// The net package's Read and Write are, on Linux, read(2) and write(2)
// on a non-blocking descriptor, made through syscall.Syscall: the
// goroutine enters the "in a system call" state, and the runtime's
// monitor thread (sysmon), which polls every 20 µs while any P is busy,
// hands the P to another thread when a call is still running at its next
// look. On a busy host (the daemon, the web app and the network stack
// share two cores) a write of a few kilobytes to a loopback TCP socket is
// often descheduled in the kernel for longer than that, so every few
// writes cost a P handoff, a futex wake of another thread, and keep
// sysmon at its 20 µs cadence: measured on the benchmark sink, sysmon
// alone was 15 % of the daemon's CPU time.
//
// A call on a non-blocking descriptor never waits (it returns EAGAIN
// instead), so it can be made with syscall.RawSyscall, which keeps the P
// and is invisible to sysmon. When the kernel has nothing to read or no
// room to write, Conn waits in the runtime's network poller exactly as
// net does, deadlines and Close included (syscall.RawConn's Read and
// Write).
package sockio
