package sni

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/meshgate/meshgate/sni/snitest"
)

// spliceHarness is a splicer with its own goroutine group, closed and
// waited for at cleanup.
type spliceHarness struct {
	sp *splicer
	wg sync.WaitGroup
	rx prometheus.Counter
	tx prometheus.Counter
}

func newSpliceHarness(t *testing.T) *spliceHarness {
	t.Helper()
	h := &spliceHarness{
		rx: prometheus.NewCounter(prometheus.CounterOpts{Name: "rx"}),
		tx: prometheus.NewCounter(prometheus.CounterOpts{Name: "tx"}),
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	sp, err := newSplicer(log, h.wg.Go, h.rx, h.tx)
	if err != nil {
		t.Fatalf("newSplicer() error = %v, want nil", err)
	}
	h.sp = sp
	sp.start()
	t.Cleanup(func() {
		sp.close()
		h.wg.Wait()
	})
	return h
}

// relay starts a relay and returns it with a channel closed by onDone.
func (h *spliceHarness) relay(client, upstream net.Conn, idle time.Duration) (*spliceRelay, <-chan struct{}) {
	ch := make(chan struct{})
	var once sync.Once
	r := h.sp.relay(client, upstream, idle, time.Now(), 0, func(*spliceRelay) { once.Do(func() { close(ch) }) })
	return r, ch
}

// spliceTCPPair returns both ends of a loopback TCP connection.
func spliceTCPPair(t testing.TB) (dialed, accepted *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("net.Listen: %v", err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("net.Dial(%s): %v", ln.Addr(), err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatalf("Accept: %v", r.err)
	}
	t.Cleanup(func() { _ = d.Close(); _ = r.c.Close() })
	return d.(*net.TCPConn), r.c.(*net.TCPConn)
}

// spliceUnixPair returns both ends of a unix stream connection.
func spliceUnixPair(t testing.TB) (dialed, accepted *net.UnixConn) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatalf("net.Listen(unix): %v", err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	d, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("net.Dial(unix): %v", err)
	}
	a := <-ch
	if a == nil {
		t.Fatal("unix Accept failed")
	}
	t.Cleanup(func() { _ = d.Close(); _ = a.Close() })
	return d.(*net.UnixConn), a.(*net.UnixConn)
}

func spliceWait(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// spliceExchange proves bytes flow both ways, then half-closes both ways
// and checks the relay ends with "eof" and exact byte counts.
func spliceExchange(t *testing.T, h *spliceHarness, client, proxySide, upSide, upstream net.Conn) {
	t.Helper()
	r, done := h.relay(proxySide, upSide, 0)
	up := make([]byte, 3<<20) // larger than one socket buffer and one chunk
	down := make([]byte, 1<<20)
	_, _ = rand.Read(up)
	_, _ = rand.Read(down)

	var wg sync.WaitGroup
	var gotUp, gotDown []byte
	var errUp, errDown error
	wg.Go(func() { gotUp, errUp = io.ReadAll(upstream) })
	wg.Go(func() { gotDown, errDown = io.ReadAll(client) })
	wg.Go(func() {
		_, _ = client.Write(up)
		_ = client.(interface{ CloseWrite() error }).CloseWrite()
	})
	wg.Go(func() {
		_, _ = upstream.Write(down)
		_ = upstream.(interface{ CloseWrite() error }).CloseWrite()
	})
	wg.Wait()
	if errUp != nil || !bytes.Equal(gotUp, up) {
		t.Fatalf("upstream read %d bytes (err %v), want the %d bytes the client sent", len(gotUp), errUp, len(up))
	}
	if errDown != nil || !bytes.Equal(gotDown, down) {
		t.Fatalf("client read %d bytes (err %v), want the %d bytes the upstream sent", len(gotDown), errDown, len(down))
	}
	spliceWait(t, "relay end", done)
	if r.why != closeEOF {
		t.Errorf("relay close reason = %q, want %q", r.why, closeEOF)
	}
	if got := r.rx.n.Load(); got != int64(len(up)) {
		t.Errorf("relay rx bytes = %d, want %d", got, len(up))
	}
	if got := r.tx.n.Load(); got != int64(len(down)) {
		t.Errorf("relay tx bytes = %d, want %d", got, len(down))
	}
	var m dto.Metric
	if err := h.rx.Write(&m); err != nil || m.GetCounter().GetValue() != float64(len(up)) {
		t.Errorf("rx bytes counter = %v (err %v), want %d", m.GetCounter().GetValue(), err, len(up))
	}
	if err := h.tx.Write(&m); err != nil || m.GetCounter().GetValue() != float64(len(down)) {
		t.Errorf("tx bytes counter = %v (err %v), want %d", m.GetCounter().GetValue(), err, len(down))
	}
}

func TestSpliceBothWays(t *testing.T) {
	snitest.CheckNoLeaks(t)
	for _, tc := range []struct {
		name string
		unix bool // client side is a unix socket (no splice(2) towards it)
	}{
		{name: "tcp to tcp"},
		{name: "unix client", unix: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newSpliceHarness(t)
			var client, proxySide net.Conn
			if tc.unix {
				client, proxySide = spliceUnixPair(t)
			} else {
				client, proxySide = spliceTCPPair(t)
			}
			upSide, upstream := spliceTCPPair(t)
			spliceExchange(t, h, client, proxySide, upSide, upstream)
		})
	}
}

// TestSpliceHalfClose: after the client half-closes, the upstream sees EOF
// and can still send; the relay ends only when both sides are done.
func TestSpliceHalfClose(t *testing.T) {
	h := newSpliceHarness(t)
	client, proxySide := spliceTCPPair(t)
	upSide, upstream := spliceTCPPair(t)
	r, done := h.relay(proxySide, upSide, 0)

	if _, err := client.Write([]byte("request")); err != nil {
		t.Fatalf("client Write: %v", err)
	}
	if err := client.CloseWrite(); err != nil {
		t.Fatalf("client CloseWrite: %v", err)
	}
	got, err := io.ReadAll(upstream)
	if err != nil || string(got) != "request" {
		t.Fatalf("upstream ReadAll = %q, %v; want \"request\", nil (EOF forwarded)", got, err)
	}
	select {
	case <-done:
		t.Fatalf("relay ended (%q) after only the client half-closed; want it open for the reply", r.why)
	default:
	}
	if _, err := upstream.Write([]byte("reply after client EOF")); err != nil {
		t.Fatalf("upstream Write after client EOF: %v", err)
	}
	buf := make([]byte, len("reply after client EOF"))
	if _, err := io.ReadFull(client, buf); err != nil || string(buf) != "reply after client EOF" {
		t.Fatalf("client ReadFull = %q, %v; want the reply", buf, err)
	}
	if err := upstream.CloseWrite(); err != nil {
		t.Fatalf("upstream CloseWrite: %v", err)
	}
	spliceWait(t, "relay end after both half-closes", done)
	if r.why != closeEOF {
		t.Errorf("close reason = %q, want %q", r.why, closeEOF)
	}
}

func TestSpliceIdleTimeout(t *testing.T) {
	h := newSpliceHarness(t)
	client, proxySide := spliceTCPPair(t)
	upSide, upstream := spliceTCPPair(t)
	r, done := h.relay(proxySide, upSide, 30*time.Millisecond)
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatalf("client Write: %v", err)
	}
	spliceWait(t, "idle close", done)
	if r.why != closeIdle {
		t.Fatalf("close reason = %q, want %q", r.why, closeIdle)
	}
	spliceExpectEOF(t, "idle close", client, upstream)
}

// spliceExpectEOF checks that both peers of a relay see the proxy close
// its sockets (after names the event, for the message).
func spliceExpectEOF(t *testing.T, after string, client, upstream net.Conn) {
	t.Helper()
	for name, c := range map[string]net.Conn{"client": client, "upstream": upstream} {
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.ReadAll(c); err != nil {
			t.Errorf("%s ReadAll after %s: %v, want EOF", name, after, err)
		}
	}
}

// TestSpliceMaxDuration: a relay is closed once it is older than its
// maximum duration, however busy.
func TestSpliceMaxDuration(t *testing.T) {
	h := newSpliceHarness(t)
	client, proxySide := spliceTCPPair(t)
	upSide, upstream := spliceTCPPair(t)
	ch := make(chan struct{})
	r := h.sp.relay(proxySide, upSide, time.Hour, time.Now(), 50*time.Millisecond, func(*spliceRelay) { close(ch) })
	buf := make([]byte, 1)
	for done := false; !done; {
		select {
		case <-ch:
			done = true
		default:
			// Keep it busy: idleness must not be what closes it.
			if _, err := client.Write([]byte("x")); err != nil {
				done = true
				break
			}
			if _, err := io.ReadFull(upstream, buf); err != nil {
				done = true
			}
		}
	}
	spliceWait(t, "relay end", ch)
	if r.why != closeMaxDuration {
		t.Fatalf("close reason = %q, want %q", r.why, closeMaxDuration)
	}
}

func TestSpliceSweepPeriod(t *testing.T) {
	for _, tc := range []struct {
		name string
		tick time.Duration
		want time.Duration
	}{
		{name: "none", tick: 0, want: time.Second},
		{name: "negative", tick: -time.Second, want: time.Second},
		{name: "tiny", tick: time.Millisecond, want: 5 * time.Millisecond},
		{name: "quarter", tick: 100 * time.Millisecond, want: 25 * time.Millisecond},
		{name: "hour", tick: time.Hour, want: time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := spliceSweepPeriod(tc.tick); got != tc.want {
				t.Fatalf("spliceSweepPeriod(%v) = %v, want %v", tc.tick, got, tc.want)
			}
		})
	}
}

// TestSpliceIdleKeepsActive: a relay moving bytes is not idle, whatever
// the sweep sees; only the quiet one is closed.
func TestSpliceIdleKeepsActive(t *testing.T) {
	h := newSpliceHarness(t)
	quietC, quietP := spliceTCPPair(t)
	quietU, _ := spliceTCPPair(t)
	_ = quietC
	busyC, busyP := spliceTCPPair(t)
	busyU, busyUp := spliceTCPPair(t)
	const idle = time.Second
	rq, quietDone := h.relay(quietP, quietU, idle)
	rb, busyDone := h.relay(busyP, busyU, idle)

	// Keep the busy relay moving until the quiet one is closed.
	buf := make([]byte, 1)
	for i := 0; ; i++ {
		select {
		case <-quietDone:
		case <-time.After(idle / 50):
			if _, err := busyC.Write([]byte{byte(i)}); err != nil {
				t.Fatalf("busy client Write: %v", err)
			}
			if _, err := io.ReadFull(busyUp, buf); err != nil {
				t.Fatalf("busy upstream Read: %v (busy relay closed: %q)", err, rb.why)
			}
			continue
		}
		break
	}
	if rq.why != closeIdle {
		t.Errorf("quiet relay close reason = %q, want %q", rq.why, closeIdle)
	}
	select {
	case <-busyDone:
		t.Errorf("busy relay closed (%q) while it was moving bytes", rb.why)
	default:
	}
}

func TestSpliceUpstreamReset(t *testing.T) {
	h := newSpliceHarness(t)
	client, proxySide := spliceTCPPair(t)
	upSide, upstream := spliceTCPPair(t)
	r, done := h.relay(proxySide, upSide, 0)
	_ = upstream.SetLinger(0)
	_ = upstream.Close() // RST
	spliceWait(t, "relay end after upstream reset", done)
	if r.why != closeUpstreamReset {
		t.Fatalf("close reason = %q, want %q", r.why, closeUpstreamReset)
	}
	_ = client.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadAll(client); err != nil && !errors.Is(err, net.ErrClosed) {
		t.Logf("client read after reset: %v", err)
	}
}

// TestSpliceCloseAll: closing the splicer ends every relay with "closed".
func TestSpliceCloseAll(t *testing.T) {
	snitest.CheckNoLeaks(t)
	var wg sync.WaitGroup
	sp, err := newSplicer(slog.New(slog.DiscardHandler), wg.Go, prometheus.NewCounter(prometheus.CounterOpts{Name: "rx"}), prometheus.NewCounter(prometheus.CounterOpts{Name: "tx"}))
	if err != nil {
		t.Fatalf("newSplicer: %v", err)
	}
	sp.start()
	var reasons []string
	var mu sync.Mutex
	for range 5 {
		_, p := spliceTCPPair(t)
		u, _ := spliceTCPPair(t)
		sp.relay(p, u, time.Hour, time.Now(), 0, func(r *spliceRelay) {
			mu.Lock()
			reasons = append(reasons, r.why)
			mu.Unlock()
		})
	}
	sp.close()
	wg.Wait()
	if len(reasons) != 5 {
		t.Fatalf("after close, %d relays finished, want 5", len(reasons))
	}
	for _, why := range reasons {
		if why != closeShutdown {
			t.Errorf("close reason = %q, want %q", why, closeShutdown)
		}
	}
	// A relay started after close is closed at once.
	_, p := spliceTCPPair(t)
	u, _ := spliceTCPPair(t)
	var why string
	sp.relay(p, u, 0, time.Now(), 0, func(r *spliceRelay) { why = r.why })
	if why != closeShutdown {
		t.Errorf("relay after close: reason %q, want %q", why, closeShutdown)
	}
}

// splicePipeFDs counts this process's open pipe fds.
func splicePipeFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	n := 0
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err == nil && strings.HasPrefix(target, "pipe:") {
			n++
		}
	}
	return n
}

// splicePipesAtMost waits (running the GC, which frees pooled pipes) for
// the pipe count to fall to want.
func splicePipesAtMost(t *testing.T, want int) bool {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for splicePipeFDs(t) > want {
		if time.Now().After(deadline) {
			return false
		}
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// TestSpliceIdleHoldsNoPipe: after traffic, idle relays hold their two
// sockets and nothing else: no pipe, no goroutine.
func TestSpliceIdleHoldsNoPipe(t *testing.T) {
	basePipes := splicePipeFDs(t)
	splicePipesAtMost(t, basePipes) // drop pipes pooled by earlier tests
	basePipes = splicePipeFDs(t)
	h := newSpliceHarness(t)
	const n = 20
	type pair struct{ c, u net.Conn }
	pairs := make([]pair, n)
	for i := range pairs {
		c, p := spliceTCPPair(t)
		u, up := spliceTCPPair(t)
		h.relay(p, u, 0)
		pairs[i] = pair{c, up}
	}
	baseG := snitest.Goroutines()
	exchange := func(round int) {
		t.Helper()
		for i, p := range pairs {
			msg := []byte{byte(i), byte(round), 2, 3}
			got := make([]byte, len(msg))
			if _, err := p.c.Write(msg); err != nil {
				t.Fatalf("round %d: client Write: %v", round, err)
			}
			if _, err := io.ReadFull(p.u, got); err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("round %d: upstream got %v, %v; want %v", round, got, err, msg)
			}
			if _, err := p.u.Write(msg); err != nil {
				t.Fatalf("round %d: upstream Write: %v", round, err)
			}
			if _, err := io.ReadFull(p.c, got); err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("round %d: client got %v, %v; want %v", round, got, err, msg)
			}
		}
	}
	exchange(1)
	// Busy pumps wait in the runtime poller; once quiet, the sweeper moves
	// them to epoll and they exit.
	snitest.WaitFor(t, "parked pumps to move to epoll and exit", func() bool { return snitest.Goroutines() <= baseG })
	exchange(2) // the directions were re-armed and still carry bytes
	snitest.WaitFor(t, "pumps to exit again", func() bool { return snitest.Goroutines() <= baseG })
	if h.sp.live() != n {
		t.Fatalf("live relays = %d, want %d", h.sp.live(), n)
	}
	if !splicePipesAtMost(t, basePipes) {
		t.Fatalf("%d pipe fds open with %d idle relays, want %d (the baseline): idle relays must not pin splice pipes",
			splicePipeFDs(t), n, basePipes)
	}
}

// TestSpliceCrowded: beyond the crowd limit, relays start in epoll and each
// direction goes back there after every burst, so bytes still flow both
// ways, half-closes and bulk included, and no relay holds a goroutine
// between bursts. The sweeper is not started: nothing but the crowded path
// can make the pumps exit.
func TestSpliceCrowded(t *testing.T) {
	for _, tc := range []struct {
		name string
		unix bool
	}{
		{name: "tcp to tcp"},
		{name: "unix client", unix: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &spliceHarness{
				rx: prometheus.NewCounter(prometheus.CounterOpts{Name: "rx"}),
				tx: prometheus.NewCounter(prometheus.CounterOpts{Name: "tx"}),
			}
			sp, err := newSplicer(slog.New(slog.DiscardHandler), h.wg.Go, h.rx, h.tx)
			if err != nil {
				t.Fatal(err)
			}
			sp.crowd = 0
			h.sp = sp
			h.wg.Go(sp.pollLoop) // no sweeper
			t.Cleanup(func() {
				sp.close()
				h.wg.Wait()
			})
			var client, proxySide net.Conn
			if tc.unix {
				client, proxySide = spliceUnixPair(t)
			} else {
				client, proxySide = spliceTCPPair(t)
			}
			upSide, upstream := spliceTCPPair(t)
			spliceExchange(t, h, client, proxySide, upSide, upstream)

			baseG := snitest.Goroutines()
			if tc.unix {
				client, proxySide = spliceUnixPair(t)
			} else {
				client, proxySide = spliceTCPPair(t)
			}
			upSide, upstream = spliceTCPPair(t)
			h.relay(proxySide, upSide, 0)
			for round := range 3 {
				msg := []byte{'r', byte(round)}
				got := make([]byte, len(msg))
				if _, err := client.Write(msg); err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadFull(upstream, got); err != nil || !bytes.Equal(got, msg) {
					t.Fatalf("round %d: upstream got %q, %v", round, got, err)
				}
				if _, err := upstream.Write(msg); err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadFull(client, got); err != nil || !bytes.Equal(got, msg) {
					t.Fatalf("round %d: client got %q, %v", round, got, err)
				}
				snitest.WaitFor(t, "crowded pumps to exit after the burst", func() bool { return snitest.Goroutines() <= baseG })
			}
			_ = client.Close()
			_ = upstream.Close()
		})
	}
}

// TestSpliceStaleToken: a finished relay's slot is reused, and an epoll
// event still naming the finished relay (its registration number) starts
// no pump on the relay now in that slot; the new relay's own token does.
func TestSpliceStaleToken(t *testing.T) {
	var spawned atomic.Int32
	var wg sync.WaitGroup
	spawn := func(f func()) {
		spawned.Add(1)
		wg.Go(f)
	}
	sp, err := newSplicer(slog.New(slog.DiscardHandler), spawn, prometheus.NewCounter(prometheus.CounterOpts{Name: "rx"}), prometheus.NewCounter(prometheus.CounterOpts{Name: "tx"}))
	if err != nil {
		t.Fatal(err)
	}
	sp.crowd = 0 // relays start in epoll: relay itself spawns nothing
	t.Cleanup(func() {
		sp.close()
		wg.Wait()
	})
	newRelay := func() *spliceRelay {
		_, proxySide := spliceTCPPair(t)
		upSide, _ := spliceTCPPair(t)
		return sp.relay(proxySide, upSide, 0, time.Now(), 0, nil)
	}
	a := newRelay()
	staleRx, staleTx := a.rx.token(), a.tx.token()
	a.close(closeEOF)
	if sp.live() != 0 {
		t.Fatalf("live() = %d after the only relay closed", sp.live())
	}
	b := newRelay()
	if b.slot != a.slot || b.gen == a.gen {
		t.Fatalf("second relay: slot %d gen %d; want slot %d reused with a new gen (old %d)", b.slot, b.gen, a.slot, a.gen)
	}
	before := spawned.Load()
	sp.dispatch(staleRx)
	sp.dispatch(staleTx)
	sp.dispatch(uint64(b.gen)<<32 | 1000<<1) // a slot never used
	if n := spawned.Load() - before; n != 0 {
		t.Fatalf("stale tokens started %d pumps; want 0", n)
	}
	sp.dispatch(b.rx.token())
	if n := spawned.Load() - before; n != 1 {
		t.Fatalf("the live relay's token started %d pumps; want 1", n)
	}
}
