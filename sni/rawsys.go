package sni

// Socket calls of the splice pumps that skip the runtime's syscall
// bookkeeping.
//
// The standard library makes every read and write through syscall.Syscall,
// which tells the scheduler that the goroutine may block. When every P was
// idle just before (a gateway between two flights of a handshake), that
// call also wakes the runtime's monitor thread (sysmon), which then polls
// every 20µs until the process is idle again. With one core per gateway,
// those wake-ups were a sixth of meshgate's CPU per proxied connection and
// half its context switches. The pumps only ever call these on
// non-blocking sockets, where read, write and the queue checks return at
// once, so they go through RawSyscall, as the runtime itself does for
// epoll_ctl. Waiting stays with the runtime poller (RawConn.Read/Write).

import (
	"errors"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawRead is read(2) on a non-blocking fd.
func rawRead(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// rawReadRetry is rawRead, repeated while a signal interrupts it (EINTR).
func rawReadRetry(fd int, p []byte) (int, error) {
	for {
		n, err := rawRead(fd, p)
		if !errors.Is(err, unix.EINTR) {
			return n, err
		}
	}
}

// rawWrite is write(2) on a non-blocking fd.
func rawWrite(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// rawInq is ioctl(SIOCINQ): the bytes queued on a stream socket.
func rawInq(fd int) (int, error) {
	var v int32
	_, _, e := unix.RawSyscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCINQ, uintptr(unsafe.Pointer(&v)))
	if e != 0 {
		return 0, e
	}
	return int(v), nil
}

// rawPeekByte is recv(2) of one byte with MSG_PEEK|MSG_DONTWAIT: 1 when a
// byte is queued, 0 at EOF, EAGAIN when the queue is empty.
func rawPeekByte(fd int) (int, error) {
	var b [1]byte
	n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), 1, unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// rawShutdownWrite is shutdown(2) of the write side.
func rawShutdownWrite(fd int) error {
	_, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), unix.SHUT_WR, 0)
	if e != 0 {
		return e
	}
	return nil
}
