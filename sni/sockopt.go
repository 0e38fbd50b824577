package sni

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// setDeferAcceptOpt sets TCP_DEFER_ACCEPT on l to secs (0 clears it).
func setDeferAcceptOpt(l *net.TCPListener, secs int) error {
	rc, err := l.SyscallConn()
	if err != nil {
		return fmt.Errorf("sni: TCP_DEFER_ACCEPT: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, secs)
	}); err != nil {
		return fmt.Errorf("sni: TCP_DEFER_ACCEPT: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("sni: TCP_DEFER_ACCEPT %d: %w", secs, serr)
	}
	return nil
}

// deferAcceptOpt reads TCP_DEFER_ACCEPT of l (the kernel reports it
// rounded to its SYN-ACK retransmission schedule; 0 = off).
func deferAcceptOpt(l *net.TCPListener) (int, error) {
	rc, err := l.SyscallConn()
	if err != nil {
		return 0, err
	}
	var v int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		v, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT)
	}); err != nil {
		return 0, err
	}
	return v, serr
}
