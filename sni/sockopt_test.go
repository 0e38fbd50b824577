package sni

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/meshgate/meshgate/sni/snitest"
)

// sockoptInt reads one integer socket option of c.
func sockoptInt(t *testing.T, c net.Conn, level, opt int) int {
	t.Helper()
	if !tcpSocket(c) {
		t.Fatalf("socket is %T, want a TCP socket", c)
	}
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatalf("SyscallConn: %v", err)
	}
	var v int
	var serr error
	if err := rc.Control(func(fd uintptr) { v, serr = unix.GetsockoptInt(int(fd), level, opt) }); err != nil || serr != nil {
		t.Fatalf("getsockopt(%d, %d): %v, %v", level, opt, err, serr)
	}
	return v
}

// serverDefaultLoopbackListen is the server's default Listen on a
// loopback port 0.
func serverDefaultLoopbackListen(ctx context.Context, network, address string) (net.Listener, error) {
	if network == "tcp" {
		address = "127.0.0.1:0"
	}
	return defaultListen(ctx, network, address)
}

// serverOneRelay opens one idle connection through h and returns the
// proxy's relay for it once spliced.
func serverOneRelay(t *testing.T, h *serverHarness, addr, sni string) *spliceRelay {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := c.Write(snitest.ClientHello(t, sni)); err != nil {
		t.Fatalf("write hello: %v", err)
	}
	var r *spliceRelay
	snitest.WaitFor(t, "the connection to be spliced", func() bool {
		h.s.mu.Lock()
		defer h.s.mu.Unlock()
		for pc := range h.s.conns {
			pc.mu.Lock()
			r = pc.relay
			pc.mu.Unlock()
		}
		return r != nil
	})
	return r
}

// TestServerSocketOptions: a socket accepted by the default Listen gets no
// keep-alive; the upstream socket gets it only when the route's
// DestinationRule has tcpKeepalive, with its time; both keep Go's
// TCP_NODELAY, which small relayed bursts rely on.
func TestServerSocketOptions(t *testing.T) {
	snitest.CheckNoLeaks(t)
	for _, tc := range []struct {
		name      string
		pol       ConnPolicy
		keepalive int
		idle      int // TCP_KEEPIDLE seconds; 0 = not checked
	}{
		{"no tcpKeepalive", ConnPolicy{}, 0, 0},
		{"tcpKeepalive time 30s", ConnPolicy{KeepAlive: 30 * time.Second}, 1, 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := snitest.NewBackend(t, snitest.BackendConfig{Hold: true})
			h := newServerHarness(t, func(c *ServerConfig) { c.Listen = serverDefaultLoopbackListen })
			h.apply(t, serverPassthroughTable(t, map[string][]string{"ka.example.com": {be.Addr()}}, tc.pol))
			r := serverOneRelay(t, h, h.addr(t, ""), "ka.example.com")
			if got := sockoptInt(t, r.client, unix.SOL_SOCKET, unix.SO_KEEPALIVE); got != 0 {
				t.Errorf("accepted socket SO_KEEPALIVE = %d, want 0", got)
			}
			for name, c := range map[string]net.Conn{"accepted": r.client, "upstream": r.upstream} {
				if got := sockoptInt(t, c, unix.IPPROTO_TCP, unix.TCP_NODELAY); got == 0 {
					t.Errorf("%s socket TCP_NODELAY = 0, want on", name)
				}
			}
			if got := sockoptInt(t, r.upstream, unix.SOL_SOCKET, unix.SO_KEEPALIVE); got != tc.keepalive {
				t.Errorf("upstream socket SO_KEEPALIVE = %d, want %d", got, tc.keepalive)
			}
			if tc.idle > 0 {
				if got := sockoptInt(t, r.upstream, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE); got != tc.idle {
					t.Errorf("upstream socket TCP_KEEPIDLE = %d, want %d", got, tc.idle)
				}
			}
		})
	}
}

// TestServerDialKeepAlive: the dial sets SO_KEEPALIVE exactly when the
// policy asks for it, including an empty tcpKeepalive block
// (KeepAliveSet, the OS's settings) and never when KeepAlive is negative.
func TestServerDialKeepAlive(t *testing.T) {
	snitest.CheckNoLeaks(t)
	be := snitest.NewBackend(t, snitest.BackendConfig{Hold: true})
	h := newServerHarness(t, nil)
	for _, tc := range []struct {
		name string
		pol  ConnPolicy
		want int
	}{
		{"unset", ConnPolicy{}, 0},
		{"empty block", ConnPolicy{KeepAliveSet: true}, 1},
		{"interval only", ConnPolicy{KeepAliveInterval: 7 * time.Second}, 1},
		{"probes only", ConnPolicy{KeepAliveProbes: 2}, 1},
		{"disabled", ConnPolicy{KeepAlive: -1, KeepAliveSet: true}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := h.s.dial(t.Context(), tc.pol, be.Addr())
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer c.Close()
			if got := sockoptInt(t, c, unix.SOL_SOCKET, unix.SO_KEEPALIVE); got != tc.want {
				t.Errorf("SO_KEEPALIVE = %d, want %d", got, tc.want)
			}
			if tc.pol.KeepAliveInterval > 0 {
				if got := sockoptInt(t, c, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL); got != 7 {
					t.Errorf("TCP_KEEPINTVL = %d, want 7", got)
				}
			}
		})
	}
}

// TestServerDeferAccept: a listener that reads a ClientHello has
// TCP_DEFER_ACCEPT, a plain TCP one has none, and setDeferAccept clears
// and sets it on an open listener (as Apply does when a reload changes
// what the listener needs).
func TestServerDeferAccept(t *testing.T) {
	snitest.CheckNoLeaks(t)
	be := snitest.NewTCPBackend(t)
	h := newServerHarness(t, nil)
	h.apply(t, serverPassthroughTable(t, map[string][]string{"d.example.com": {be.Addr()}}, ConnPolicy{}))
	tls := serverListenerOf(t, h)
	if v, err := deferAcceptOpt(tls); err != nil || v == 0 {
		t.Fatalf("TLS listener TCP_DEFER_ACCEPT = %d, %v; want on", v, err)
	}
	h.s.setDeferAccept("test", tls, false)
	if v, err := deferAcceptOpt(tls); err != nil || v != 0 {
		t.Fatalf("after clearing, TCP_DEFER_ACCEPT = %d, %v; want 0", v, err)
	}
	h.s.setDeferAccept("test", tls, true)
	if v, err := deferAcceptOpt(tls); err != nil || v == 0 {
		t.Fatalf("after setting, TCP_DEFER_ACCEPT = %d, %v; want on", v, err)
	}

	h2 := newServerHarness(t, nil)
	h2.apply(t, serverTCPTable(t, be.Addr()))
	if v, err := deferAcceptOpt(serverListenerOf(t, h2)); err != nil || v != 0 {
		t.Fatalf("plain TCP listener TCP_DEFER_ACCEPT = %d, %v; want 0", v, err)
	}
}

// serverListenerOf returns h's one TCP listener.
func serverListenerOf(t *testing.T, h *serverHarness) *net.TCPListener {
	t.Helper()
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	if len(h.s.listeners) != 1 {
		t.Fatalf("%d listeners, want 1", len(h.s.listeners))
	}
	for _, l := range h.s.listeners {
		if tl, ok := l.ln.(*net.TCPListener); ok {
			return tl
		}
		t.Fatalf("listener is %T, want *net.TCPListener", l.ln)
	}
	return nil
}
