package sni

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// TestDialSock: a dialled socket carries bytes both ways, half-closes,
// names its peer; a refused connect and a cancelled context come back as
// errors that say so.
func TestDialSock(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "tcp6" {
				addr = "[::1]:0"
			}
			ln, err := net.Listen(network, addr)
			if err != nil {
				t.Skipf("no %s loopback: %v", network, err)
			}
			defer ln.Close()
			got := make(chan []byte, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					got <- nil
					return
				}
				defer c.Close()
				_, _ = c.Write([]byte("pong"))
				b, _ := io.ReadAll(c) // ends at the dialler's FIN
				got <- b
			}()
			ap := netip.MustParseAddrPort(ln.Addr().String())
			c, err := dialSock(t.Context(), ap, time.Now().Add(5*time.Second), net.KeepAliveConfig{})
			if err != nil {
				t.Fatalf("dialSock %s: %v", ap, err)
			}
			defer c.Close()
			if ra, ok := c.RemoteAddr().(*net.TCPAddr); !ok || ra.AddrPort() != ap {
				t.Errorf("RemoteAddr = %v, want %s", c.RemoteAddr(), ap)
			}
			buf := make([]byte, 4)
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "pong" {
				t.Fatalf("read %q, %v; want pong", buf, err)
			}
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			if err := c.CloseWrite(); err != nil {
				t.Fatalf("CloseWrite: %v", err)
			}
			if b := <-got; string(b) != "ping" {
				t.Fatalf("peer read %q, want ping then EOF", b)
			}
		})
	}

	t.Run("refused", func(t *testing.T) {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ap := netip.MustParseAddrPort(ln.Addr().String())
		ln.Close() // nothing listens there now
		_, err = dialSock(t.Context(), ap, time.Now().Add(5*time.Second), net.KeepAliveConfig{})
		var oe *net.OpError
		if !errors.Is(err, syscall.ECONNREFUSED) || !errors.As(err, &oe) || oe.Op != "dial" {
			t.Fatalf("dial to a closed port: %v (%T), want a dial *net.OpError with ECONNREFUSED", err, err)
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := dialSock(ctx, netip.MustParseAddrPort("127.0.0.1:9"), time.Time{}, net.KeepAliveConfig{})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("dial with a cancelled context: %v, want context.Canceled", err)
		}
	})

	t.Run("hostile", func(t *testing.T) {
		for _, ap := range []netip.AddrPort{{}, netip.MustParseAddrPort("127.0.0.1:0"), netip.MustParseAddrPort("[fe80::1%eth0]:80")} {
			if _, err := dialSock(t.Context(), ap, time.Time{}, net.KeepAliveConfig{}); err == nil {
				t.Errorf("dialSock(%v) = nil error, want one", ap)
			}
		}
	})
}
