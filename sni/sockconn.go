package sni

// Upstream sockets opened by the server itself.
//
// A *net.TCPConn keeps, besides its fd and its poller registration, both
// of its addresses as *net.TCPAddr, each pointing into the
// syscall.Sockaddr it was converted from: four small objects, about 160
// bytes, for every socket, for as long as the socket lives. A gateway that
// holds 100,000 idle connections lives by that figure, and the relay never
// reads those addresses: the access log names the endpoint it dialled.
//
// So an upstream at an IP address is dialled here: a non-blocking socket,
// connect(2), and the fd handed to the runtime poller as an *os.File
// (which holds no address), wrapped in a sockConn. The socket gets what
// net.Dialer would give it: TCP_NODELAY, and keep-alive only when the
// route asks for it. A host name still goes through net.Dialer.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// sockConn is a connected TCP socket held as a pollable *os.File. It is a
// net.Conn and a syscall.Conn, and can half-close (CloseWrite).
type sockConn struct {
	f *os.File
}

// sockFileName names every sockConn's file; it shows in I/O errors
// ("read tcp: connection reset by peer").
const sockFileName = "tcp"

func (c *sockConn) Read(p []byte) (int, error)  { return c.f.Read(p) }
func (c *sockConn) Write(p []byte) (int, error) { return c.f.Write(p) }
func (c *sockConn) Close() error                { return c.f.Close() }

// CloseWrite shuts down the write side (sends a FIN).
func (c *sockConn) CloseWrite() error {
	rc, err := c.f.SyscallConn()
	if err != nil {
		return err
	}
	return shutdownWrite(rc)
}

// SyscallConn returns the raw socket, for the splice pumps.
func (c *sockConn) SyscallConn() (syscall.RawConn, error) { return c.f.SyscallConn() }

func (c *sockConn) SetDeadline(t time.Time) error      { return c.f.SetDeadline(t) }
func (c *sockConn) SetReadDeadline(t time.Time) error  { return c.f.SetReadDeadline(t) }
func (c *sockConn) SetWriteDeadline(t time.Time) error { return c.f.SetWriteDeadline(t) }

// LocalAddr asks the kernel (getsockname); nil once the socket is closed.
func (c *sockConn) LocalAddr() net.Addr { return c.addr(unix.Getsockname) }

// RemoteAddr asks the kernel (getpeername); nil once the socket is closed.
func (c *sockConn) RemoteAddr() net.Addr { return c.addr(unix.Getpeername) }

func (c *sockConn) addr(get func(int) (unix.Sockaddr, error)) net.Addr {
	rc, err := c.f.SyscallConn()
	if err != nil {
		return nil
	}
	var sa unix.Sockaddr
	if rc.Control(func(fd uintptr) { sa, err = get(int(fd)) }) != nil || err != nil {
		return nil
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)))
	case *unix.SockaddrInet6:
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port)))
	}
	return nil
}

// dialSock connects a TCP socket to ap, giving up at deadline (zero:
// never) or when ctx ends. ka is applied as net.Dialer applies it, except
// that a value of 0 keeps the OS's setting like -1 (serverKeepAlive gives
// no 0). Errors are *net.OpError, as net.Dialer's.
func dialSock(ctx context.Context, ap netip.AddrPort, deadline time.Time, ka net.KeepAliveConfig) (*sockConn, error) {
	c, err := dialSockRaw(ctx, ap, deadline, ka)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(ap), Err: err}
	}
	return c, nil
}

func dialSockRaw(ctx context.Context, ap netip.AddrPort, deadline time.Time, ka net.KeepAliveConfig) (*sockConn, error) {
	if !ap.IsValid() || ap.Port() == 0 {
		return nil, errors.New("no address or port")
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	family := unix.AF_INET
	if a := ap.Addr(); !a.Is4() {
		if a.Zone() != "" {
			return nil, fmt.Errorf("zoned address %s", a)
		}
		family = unix.AF_INET6
	}
	var sa rawSockaddr
	sa.set(ap)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	fd, err := rawSocket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	if err := sockSetOpts(fd, ka); err != nil {
		_ = unix.Close(fd)
		return nil, err
	}
	// A non-blocking connect interrupted by a signal goes on in the
	// background, like one in progress: it is waited for, not retried.
	inProgress := false
	switch cerr := rawConnect(fd, &sa); cerr {
	case nil, unix.EISCONN:
	case unix.EINPROGRESS, unix.EALREADY, unix.EINTR:
		inProgress = true
	default:
		_ = unix.Close(fd)
		return nil, os.NewSyscallError("connect", cerr)
	}
	f := os.NewFile(uintptr(fd), sockFileName) // a non-blocking fd: pollable
	c := &sockConn{f: f}
	if !inProgress {
		return c, nil
	}
	if err := c.waitConnected(ctx, deadline); err != nil {
		_ = f.Close()
		return nil, err
	}
	return c, nil
}

// sockSetOpts sets what a dialled upstream gets before connect.
func sockSetOpts(fd int, ka net.KeepAliveConfig) error {
	set := func(level, opt, v int, name string) error {
		if err := rawSetsockoptInt(fd, level, opt, v); err != nil {
			return os.NewSyscallError("setsockopt "+name, err)
		}
		return nil
	}
	if err := set(unix.IPPROTO_TCP, unix.TCP_NODELAY, 1, "TCP_NODELAY"); err != nil {
		return err
	}
	if !ka.Enable {
		return nil
	}
	if err := set(unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1, "SO_KEEPALIVE"); err != nil {
		return err
	}
	secs := func(d time.Duration) int { return int((d + time.Second - 1) / time.Second) }
	if ka.Idle > 0 {
		if err := set(unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, secs(ka.Idle), "TCP_KEEPIDLE"); err != nil {
			return err
		}
	}
	if ka.Interval > 0 {
		if err := set(unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, secs(ka.Interval), "TCP_KEEPINTVL"); err != nil {
			return err
		}
	}
	if ka.Count > 0 {
		if err := set(unix.IPPROTO_TCP, unix.TCP_KEEPCNT, ka.Count, "TCP_KEEPCNT"); err != nil {
			return err
		}
	}
	return nil
}

// waitConnected waits in the runtime poller until a connect in progress
// ends, and returns its outcome.
func (c *sockConn) waitConnected(ctx context.Context, deadline time.Time) error {
	if !deadline.IsZero() {
		if err := c.f.SetWriteDeadline(deadline); err != nil {
			return err
		}
	}
	// A cancelled context wakes the wait through a past deadline.
	stop := context.AfterFunc(ctx, func() { _ = c.f.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	rc, err := c.f.SyscallConn()
	if err != nil {
		return err
	}
	var soErr error
	werr := rc.Write(func(fd uintptr) bool {
		v, err := rawGetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			soErr = os.NewSyscallError("getsockopt", err)
			return true
		}
		switch e := unix.Errno(v); e {
		case unix.EINPROGRESS, unix.EALREADY, unix.EINTR:
			return false
		case 0:
			// Writable with no error can also be a spurious wake-up:
			// connected only once the peer is known.
			return rawConnected(int(fd))
		default:
			soErr = os.NewSyscallError("connect", e)
			return true
		}
	})
	if !stop() {
		return ctx.Err()
	}
	if werr != nil {
		if errors.Is(werr, os.ErrDeadlineExceeded) {
			return sockTimeout{}
		}
		return werr
	}
	if soErr != nil {
		return soErr
	}
	if !deadline.IsZero() {
		return c.f.SetWriteDeadline(time.Time{})
	}
	return nil
}

// sockTimeout is a connect that ran out of time: a net.Error whose
// Timeout is true, as net.Dialer's.
type sockTimeout struct{}

func (sockTimeout) Error() string   { return "i/o timeout" }
func (sockTimeout) Timeout() bool   { return true }
func (sockTimeout) Temporary() bool { return true }
func (sockTimeout) Is(err error) bool {
	return err == os.ErrDeadlineExceeded || err == context.DeadlineExceeded
}
