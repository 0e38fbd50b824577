package sni

import (
	"errors"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// rawPair returns the fds of a connected non-blocking TCP pair on
// loopback, kept open until the test ends.
func rawPair(t *testing.T) (a, b int) {
	t.Helper()
	ca, cb := spliceTCPPair(t)
	fd := func(c net.Conn) int {
		f, err := c.(*net.TCPConn).File() // a dup, blocking unless made otherwise
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		n := int(f.Fd())
		if err := unix.SetNonblock(n, true); err != nil {
			t.Fatal(err)
		}
		return n
	}
	return fd(ca), fd(cb)
}

// waitInq waits until fd has want bytes queued.
func waitInq(t *testing.T, fd, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := rawInq(fd)
		if err != nil {
			t.Fatalf("rawInq: %v", err)
		}
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("rawInq = %d, want %d", n, want)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRawSocketCalls(t *testing.T) {
	a, b := rawPair(t)
	buf := make([]byte, 64)

	// Nothing queued: every call says so without blocking.
	if n, err := rawRead(b, buf); !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("rawRead on an empty socket = %d, %v; want EAGAIN", n, err)
	}
	if n, err := rawPeekByte(b); !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("rawPeekByte on an empty socket = %d, %v; want EAGAIN", n, err)
	}
	if n, err := rawInq(b); n != 0 || err != nil {
		t.Fatalf("rawInq on an empty socket = %d, %v; want 0", n, err)
	}
	if n, err := rawRead(b, nil); n != 0 || err != nil {
		t.Fatalf("rawRead of no bytes = %d, %v", n, err)
	}

	// Bytes: counted, peeked without being consumed, then read.
	if n, err := rawWrite(a, []byte("hello")); n != 5 || err != nil {
		t.Fatalf("rawWrite = %d, %v; want 5", n, err)
	}
	waitInq(t, b, 5)
	if n, err := rawPeekByte(b); n != 1 || err != nil {
		t.Fatalf("rawPeekByte with bytes queued = %d, %v; want 1", n, err)
	}
	if n, err := rawRead(b, buf); n != 5 || err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("rawRead = %d %q, %v; want hello", n, buf[:n], err)
	}

	// A FIN: shutdown of the write side is EOF (0) at the peer, which can
	// still write back.
	if err := rawShutdownWrite(a); err != nil {
		t.Fatalf("rawShutdownWrite: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := rawPeekByte(b)
		if err == nil && n == 0 {
			break
		}
		if !errors.Is(err, unix.EAGAIN) || time.Now().After(deadline) {
			t.Fatalf("rawPeekByte after the FIN = %d, %v; want 0 (EOF)", n, err)
		}
		time.Sleep(time.Millisecond)
	}
	if n, err := rawRead(b, buf); n != 0 || err != nil {
		t.Fatalf("rawRead after the FIN = %d, %v; want 0 (EOF)", n, err)
	}
	if n, err := rawWrite(b, []byte("back")); n != 4 || err != nil {
		t.Fatalf("rawWrite after the peer's FIN = %d, %v; want 4", n, err)
	}
	waitInq(t, a, 4)
	if _, err := rawWrite(a, []byte("x")); !errors.Is(err, unix.EPIPE) {
		t.Fatalf("rawWrite after shutdown = %v; want EPIPE", err)
	}

	// A closed fd number is an error, not a hang.
	if _, err := rawRead(-1, buf); !errors.Is(err, unix.EBADF) {
		t.Fatalf("rawRead(-1) = %v; want EBADF", err)
	}
	if _, err := rawInq(-1); !errors.Is(err, unix.EBADF) {
		t.Fatalf("rawInq(-1) = %v; want EBADF", err)
	}
	if err := rawShutdownWrite(-1); !errors.Is(err, unix.EBADF) {
		t.Fatalf("rawShutdownWrite(-1) = %v; want EBADF", err)
	}
}
