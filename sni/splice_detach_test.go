package sni

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshgate/meshgate/sni/snitest"
)

// newCrowdedSpliceHarness is newSpliceHarness with the crowd limit at 0:
// every relay starts detached.
func newCrowdedSpliceHarness(t *testing.T) *spliceHarness {
	t.Helper()
	h := newSpliceHarness(t)
	h.sp.crowd = 0 // before any relay starts
	return h
}

// startCrowdedRelay starts, in a new crowded splicer, a relay between two
// new loopback TCP pairs, with the given idle timeout. It returns the
// harness, the client and upstream peers, the relay and its done channel.
func startCrowdedRelay(t *testing.T, idle time.Duration) (h *spliceHarness, client, upstream *net.TCPConn, r *spliceRelay, done <-chan struct{}) {
	t.Helper()
	h = newCrowdedSpliceHarness(t)
	client, proxySide := spliceTCPPair(t)
	upSide, upstream := spliceTCPPair(t)
	r, done = h.relay(proxySide, upSide, idle)
	return h, client, upstream, r, done
}

// epollSets returns, for every epoll fd of this process, the fds
// registered in it, read from /proc/self/fdinfo.
func epollSets(t *testing.T) map[int]map[int]bool {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("read /proc/self/fd: %v", err)
	}
	sets := make(map[int]map[int]bool)
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if link, err := os.Readlink("/proc/self/fd/" + e.Name()); err != nil || link != "anon_inode:[eventpoll]" {
			continue
		}
		f, err := os.Open("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			continue // closed meanwhile
		}
		set := make(map[int]bool)
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			// "tfd:       12 events:       19 data: ..."
			fields := strings.Fields(sc.Text())
			if len(fields) >= 2 && fields[0] == "tfd:" {
				if n, err := strconv.Atoi(fields[1]); err == nil {
					set[n] = true
				}
			}
		}
		_ = f.Close()
		sets[fd] = set
	}
	return sets
}

// splicerEpollFD returns the fd number of sp's epoll instance.
func splicerEpollFD(t *testing.T, sp *splicer) int {
	t.Helper()
	var n int
	if err := sp.raw.Control(func(fd uintptr) { n = int(fd) }); err != nil {
		t.Fatalf("epoll fd: %v", err)
	}
	return n
}

// relayFDs returns r's two socket fds, attached or not, and whether it is
// detached.
func relayFDs(t *testing.T, r *spliceRelay) (cfd, ufd int, detached bool) {
	t.Helper()
	r.fdmu.RLock()
	defer r.fdmu.RUnlock()
	if r.detached.Load() {
		return int(r.cfd), int(r.ufd), true
	}
	get := func(c net.Conn) int {
		n := -1
		if err := rawOf(c).Control(func(fd uintptr) { n = int(fd) }); err != nil {
			t.Fatalf("fd of %T: %v", c, err)
		}
		return n
	}
	return get(r.client), get(r.upstream), false
}

// checkDetached fails t unless r is detached: both of its fds are in the
// splicer's epoll set and in no other one (the runtime poller's).
func checkDetached(t *testing.T, sp *splicer, r *spliceRelay) {
	t.Helper()
	cfd, ufd, detached := relayFDs(t, r)
	if !detached {
		t.Fatalf("relay is attached; want it detached")
	}
	own := splicerEpollFD(t, sp)
	for epfd, set := range epollSets(t) {
		for _, fd := range []int{cfd, ufd} {
			switch {
			case epfd == own && !set[fd]:
				t.Errorf("fd %d is not in the splicer's epoll set (fd %d)", fd, own)
			case epfd != own && set[fd]:
				t.Errorf("fd %d of a detached relay is registered in epoll fd %d (the runtime poller's); want only the splicer's", fd, epfd)
			}
		}
	}
}

// spliceEcho sends msg from a to b and back, each read bounded by a deadline.
func spliceEcho(t *testing.T, a, b net.Conn, msg string) {
	t.Helper()
	for _, p := range [][2]net.Conn{{a, b}, {b, a}} {
		if _, err := p[0].Write([]byte(msg)); err != nil {
			t.Fatalf("write: %v", err)
		}
		got := make([]byte, len(msg))
		_ = p[1].SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.ReadFull(p[1], got); err != nil || string(got) != msg {
			t.Fatalf("read %q, %v; want %q", got, err, msg)
		}
	}
}

// TestSpliceDetached: in a crowded splicer a relay's sockets leave the
// runtime poller at once; small bursts both ways are served on the raw
// fds without attaching, a bulk transfer attaches the relay, and once it
// is quiet again it is detached again.
func TestSpliceDetached(t *testing.T) {
	snitest.CheckNoLeaks(t)
	h, client, upstream, r, done := startCrowdedRelay(t, 0)
	checkDetached(t, h.sp, r)

	for i := range 3 {
		spliceEcho(t, client, upstream, fmt.Sprintf("small burst %d", i))
		checkDetached(t, h.sp, r)
	}

	// 4 MiB: more than one buffer and one socket buffer, so the relay
	// attaches to splice and to wait for the destination.
	bulk := bytes.Repeat([]byte("0123456789abcdef"), 4<<16)
	errc := make(chan error, 1)
	go func() { _, err := upstream.Write(bulk); errc <- err }()
	got := make([]byte, len(bulk))
	_ = client.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadFull(client, got); err != nil || !bytes.Equal(got, bulk) {
		t.Fatalf("client read %d bulk bytes (err %v); want the %d sent", len(got), err, len(bulk))
	}
	if err := <-errc; err != nil {
		t.Fatalf("upstream bulk write: %v", err)
	}
	// Quiet again, the last pump hands its direction over and detaches.
	snitest.WaitFor(t, "relay to detach after the bulk transfer", func() bool {
		_, _, d := relayFDs(t, r)
		return d
	})
	checkDetached(t, h.sp, r)
	spliceEcho(t, client, upstream, "after bulk")

	// Half-close both ways on the raw fds.
	if err := client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = upstream.SetReadDeadline(time.Now().Add(20 * time.Second))
	if rest, err := io.ReadAll(upstream); err != nil || len(rest) != 0 {
		t.Fatalf("upstream after client FIN: %q, %v; want EOF", rest, err)
	}
	select {
	case <-done:
		t.Fatalf("relay ended (%q) after one half-close", r.why)
	default:
	}
	if _, err := upstream.Write([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	if err := upstream.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = client.SetReadDeadline(time.Now().Add(20 * time.Second))
	if rest, err := io.ReadAll(client); err != nil || string(rest) != "reply" {
		t.Fatalf("client after upstream FIN: %q, %v; want \"reply\" then EOF", rest, err)
	}
	spliceWait(t, "relay end", done)
	if r.why != closeEOF {
		t.Errorf("close reason %q, want %q", r.why, closeEOF)
	}
	small := int64(len("small burst 0")*3 + len("after bulk"))
	if rx, tx := r.rx.n.Load(), r.tx.n.Load(); rx != small || tx != small+int64(len(bulk))+int64(len("reply")) {
		t.Errorf("relay counted rx %d tx %d; want %d and %d", rx, tx, small, small+int64(len(bulk))+int64(len("reply")))
	}
}

// TestSpliceDetachedEnds: a detached relay ends as an attached one does
// (same reason, both peers see the close, no fd left open): on its idle
// timeout, on a reset from either side, on Close of the splicer, and with
// the exchange of spliceExchange (bulk both ways, then half-closes).
func TestSpliceDetachedEnds(t *testing.T) {
	t.Run("exchange", func(t *testing.T) {
		snitest.CheckNoLeaks(t)
		h := newCrowdedSpliceHarness(t)
		client, proxySide := spliceTCPPair(t)
		upSide, upstream := spliceTCPPair(t)
		spliceExchange(t, h, client, proxySide, upSide, upstream)
	})
	t.Run("idle timeout", func(t *testing.T) {
		snitest.CheckNoLeaks(t)
		_, client, upstream, r, done := startCrowdedRelay(t, 50*time.Millisecond)
		spliceEcho(t, client, upstream, "x")
		spliceWait(t, "idle close", done)
		if r.why != closeIdle {
			t.Fatalf("close reason %q, want %q", r.why, closeIdle)
		}
		spliceExpectEOF(t, "idle close", client, upstream)
	})
	for _, tc := range []struct {
		name string
		want string
	}{
		{"upstream reset", closeUpstreamReset},
		{"client reset", closeClientReset},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snitest.CheckNoLeaks(t)
			h, client, upstream, r, done := startCrowdedRelay(t, 0)
			spliceEcho(t, client, upstream, "before the reset")
			checkDetached(t, h.sp, r)
			reset, other := upstream, client
			if tc.want == closeClientReset {
				reset, other = client, upstream
			}
			_ = reset.SetLinger(0)
			_ = reset.Close() // RST
			spliceWait(t, "relay end after the reset", done)
			if r.why != tc.want {
				t.Fatalf("close reason %q, want %q", r.why, tc.want)
			}
			_ = other.SetReadDeadline(time.Now().Add(20 * time.Second))
			if _, err := io.ReadAll(other); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Logf("other side after the reset: %v", err)
			}
		})
	}
	t.Run("splicer close", func(t *testing.T) {
		snitest.CheckNoLeaks(t)
		h, client, upstream, r, done := startCrowdedRelay(t, 0)
		checkDetached(t, h.sp, r)
		h.sp.close()
		spliceWait(t, "relay end after close", done)
		if r.why != closeShutdown {
			t.Fatalf("close reason %q, want %q", r.why, closeShutdown)
		}
		spliceExpectEOF(t, "close", client, upstream)
	})
}
