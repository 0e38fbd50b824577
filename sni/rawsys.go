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
//
// Dialling an upstream goes the same way (socket, options, a
// non-blocking connect and its outcome): on loopback or a LAN connect(2)
// runs the peer's side of the handshake in the caller's context for tens
// of microseconds, long enough for sysmon to take the P away and wake
// another thread to hold it, two context switches per dial.

import (
	"errors"
	"net/netip"
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

// rawSocket is socket(2).
func rawSocket(family, typ, proto int) (int, error) {
	fd, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family), uintptr(typ), uintptr(proto))
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

// rawSetsockoptInt is setsockopt(2) of an int option.
func rawSetsockoptInt(fd, level, opt, v int) error {
	iv := int32(v)
	_, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&iv)), 4, 0)
	if e != 0 {
		return e
	}
	return nil
}

// rawGetsockoptInt is getsockopt(2) of an int option.
func rawGetsockoptInt(fd, level, opt int) (int, error) {
	var iv int32
	l := uint32(4)
	_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&iv)), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return 0, e
	}
	return int(iv), nil
}

// rawSockaddr is an IPv4 or IPv6 address and port as the kernel takes
// them: a pointer to the filled structure and its length.
type rawSockaddr struct {
	any unix.RawSockaddrAny
	len uint32
}

// set fills sa with ap (an unmapped, zone-free address).
func (sa *rawSockaddr) set(ap netip.AddrPort) {
	// The port is in network byte order.
	port := [2]byte{byte(ap.Port() >> 8), byte(ap.Port())}
	if a := ap.Addr(); a.Is4() {
		in := (*unix.RawSockaddrInet4)(unsafe.Pointer(&sa.any))
		in.Family = unix.AF_INET
		*(*[2]byte)(unsafe.Pointer(&in.Port)) = port
		in.Addr = a.As4()
		sa.len = unix.SizeofSockaddrInet4
	} else {
		in := (*unix.RawSockaddrInet6)(unsafe.Pointer(&sa.any))
		in.Family = unix.AF_INET6
		*(*[2]byte)(unsafe.Pointer(&in.Port)) = port
		in.Addr = a.As16()
		sa.len = unix.SizeofSockaddrInet6
	}
}

// rawConnect is connect(2) of a non-blocking socket, which returns at
// once (EINPROGRESS while the handshake goes on).
func rawConnect(fd int, sa *rawSockaddr) error {
	_, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa.any)), uintptr(sa.len))
	if e != 0 {
		return e
	}
	return nil
}

// rawConnected reports whether fd's socket has a peer (getpeername(2)
// succeeds).
func rawConnected(fd int) bool {
	var sa unix.RawSockaddrAny
	l := uint32(unix.SizeofSockaddrAny)
	_, _, e := unix.RawSyscall(unix.SYS_GETPEERNAME, uintptr(fd), uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&l)))
	return e == 0
}
