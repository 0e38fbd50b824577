package sni

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/meshgate/meshgate/sni/snitest"
)

// TestServerAliveReportsWedgedAcceptLoop wedges the accept loop (the
// server's lock is held, so the loop blocks tracking the connection it has
// just accepted) and checks Alive names the listener, then that it
// recovers once the loop turns again.
func TestServerAliveReportsWedgedAcceptLoop(t *testing.T) {
	h := newServerHarness(t, nil)
	h.apply(t, serverPassthroughTable(t, map[string][]string{"a.example.com": {"127.0.0.1:1"}}, ConnPolicy{}))
	addr := h.addr(t, "")
	if err := h.s.Alive(time.Nanosecond); err != nil {
		t.Fatalf("Alive() on an idle server = %v, want nil", err)
	}

	h.s.mu.Lock()
	locked := true
	defer func() {
		if locked {
			h.s.mu.Unlock()
		}
	}()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("Dial(%s) = %v", addr, err)
	}
	defer c.Close()
	var got error
	snitest.WaitFor(t, "Alive to report the wedged loop", func() bool {
		got = h.s.Alive(time.Millisecond)
		return got != nil
	})
	if !errors.Is(got, ErrWedged) || !strings.Contains(got.Error(), "15443") {
		t.Fatalf("Alive(1ms) = %v, want ErrWedged naming listener 15443", got)
	}
	if err := h.s.Alive(time.Hour); err != nil {
		t.Fatalf("Alive(1h) = %v, want nil (the loop is not stuck that long)", err)
	}
	h.s.mu.Unlock()
	locked = false
	snitest.WaitFor(t, "Alive to recover once the loop turns", func() bool {
		return h.s.Alive(time.Nanosecond) == nil
	})
}
