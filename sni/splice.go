package sni

// The data path: splicing bytes between a client and its upstream.
//
// Goal: an idle proxied connection costs no goroutine, no stack and no pipe,
// only its two sockets and a few hundred bytes of heap. Two things in the
// obvious design (two goroutines each running io.Copy) break that:
//
//   - each blocked goroutine keeps a stack (at least 2 KiB, often 8 KiB);
//   - io.Copy between two *net.TCPConn uses splice(2) through a pipe that
//     internal/poll takes from its pool when the copy starts and returns only
//     when the copy ends, so every idle direction pins a pipe (two fds).
//
// So the splicer waits for readiness itself: one epoll instance, registered
// with Go's own netpoller (an epoll fd is pollable), holds every idle
// direction with EPOLLONESHOT. When a source becomes readable, the poll
// goroutine starts a pump goroutine for that direction. The pump reads what
// is there into a pooled buffer with one read(2), which also tells EOF (0)
// apart from "nothing yet" (EAGAIN), and writes it on; the buffer is taken
// only once bytes are ready and goes back at once. When a read fills the
// buffer, more is likely queued: the pump asks the kernel how much
// (SIOCINQ) and splices that through a pooled pipe (pipe.go) that goes back
// to the pool as soon as the transfer ends, because the bytes are already
// there and the transfer never waits for more. On EOF the pump
// half-closes the destination (shutdown of its write side); at the second
// EOF both sockets are closed. These calls are all non-blocking and go
// through rawsys.go, not the runtime's syscall path.
//
// While a connection is busy, its pumps wait for the next bytes in the
// runtime poller, like io.Copy, so a burst costs no hop through the poll
// goroutine (in BenchmarkProxyRoundTrip this cut the latency the proxy
// adds to a 64-byte request/response by about a third). A pump that has waited for spliceParkFor without a
// byte moving is woken by the sweeper (a past read deadline, set once, not
// per read); it then re-arms its direction in epoll and exits. So a
// connection that has been quiet for one to two seconds holds no goroutine.
//
// Idle timeouts cost no timer per connection and no deadline per read:
// every relay keeps the time of its last transfer in an atomic, and one
// sweeper goroutine scans the relays every quarter of the shortest idle
// timeout (or maximum duration) in use, at least 5ms and at most 1s, and
// closes those that have not moved a byte for their timeout. A connection is thus closed between
// IdleTimeout and IdleTimeout plus one sweep period after its last byte.
// A transfer stalled on a peer that does not read counts as idle too. The
// same sweep enforces the maximum connection duration.
//
// This file is Linux-specific (epoll, SIOCINQ, splice).

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

const (
	// spliceMaxChunk caps one transfer, so a long burst still updates the
	// relay's activity time at least every MiB.
	spliceMaxChunk = 1 << 20
	// spliceEvents is how many epoll events one wait returns.
	spliceEvents = 64

	spliceMinSweep = 5 * time.Millisecond
	spliceMaxSweep = time.Second

	// spliceParkFor is how long a pump may wait in the runtime poller
	// for more bytes before its direction moves to epoll and the pump
	// exits (so between 1 and 2 sweeps of at most 1s).
	spliceParkFor = time.Second

	// spliceCrowd is how many live relays the splicer lets wait in the
	// runtime poller. Beyond it, a gateway holding many connections, each
	// direction goes back to epoll after every burst and new relays start
	// there: a burst then costs a hop through the poll goroutine, but no
	// connection holds a goroutine stack between bursts, so memory during
	// a fill of many connections stays at sockets and relay structs.
	spliceCrowd = 256

	spliceRxDone = 1 // client reached EOF
	spliceTxDone = 2 // upstream reached EOF
)

// splicer owns the epoll instance, the poll and sweep goroutines and the
// set of live relays. Its methods are safe for concurrent use.
type splicer struct {
	log     *slog.Logger
	spawn   func(func()) // starts a goroutine owned (and waited for) by the server
	rxBytes prometheus.Counter
	txBytes prometheus.Counter
	base    time.Time // origin of relay activity times (monotonic)

	epoll *os.File // the epoll fd, registered with the runtime poller
	raw   syscall.RawConn

	nLive atomic.Int64 // live relays in slots, read without the lock
	crowd int64        // spliceCrowd; tests lower it

	mu sync.Mutex // guards slots, free, gen, minTick, closed
	// slots holds the live relays, nil where free; free lists the free
	// indices. A slice, not a map: 8 bytes per relay, and the sweep
	// walks it in order.
	slots   []*spliceRelay
	free    []int32
	gen     uint32        // registration number of the last relay
	minTick time.Duration // shortest relay tick seen by the last sweep
	closed  bool
	mem     memReturn // the sweeper's

	kick chan struct{} // buffer 1: a relay with a shorter tick arrived
	stop chan struct{} // closed by close: ends the sweeper
}

// newSplicer creates the epoll instance. Call start to run it.
func newSplicer(log *slog.Logger, spawn func(func()), rx, tx prometheus.Counter) (*splicer, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("sni: splice: epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("sni: splice: set epoll fd non-blocking: %w", err)
	}
	f := os.NewFile(uintptr(fd), "sni-splice-epoll")
	// A deadline can only be set on a file the runtime poller accepted; if
	// it refused the epoll fd, the poll loop could never wait on it.
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("sni: splice: epoll fd is not pollable: %w", err)
	}
	raw, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("sni: splice: %w", err)
	}
	return &splicer{
		log:     log,
		spawn:   spawn,
		rxBytes: rx,
		txBytes: tx,
		base:    time.Now(),
		epoll:   f,
		raw:     raw,
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		crowd:   spliceCrowd,
	}, nil
}

// start runs the poll loop and the idle sweeper.
func (s *splicer) start() {
	s.spawn(s.pollLoop)
	s.spawn(s.sweepLoop)
}

// now returns the time since s.base, for relay activity stamps.
func (s *splicer) now() int64 { return int64(time.Since(s.base)) }

// spliceRelay is one proxied connection in the splice phase.
type spliceRelay struct {
	sp       *splicer
	client   net.Conn
	upstream net.Conn
	rx       spliceDir     // client → upstream
	tx       spliceDir     // upstream → client
	idle     time.Duration // 0 = no idle timeout
	expire   int64         // splicer.now() at which to close; 0 = never
	tick     time.Duration // shortest of idle and max duration, for the sweep period
	onDone   func(*spliceRelay)

	lastActive atomic.Int64  // splicer.now() of the last transfer
	refs       atomic.Int32  // 1 until closed, plus 1 per running pump
	eofs       atomic.Uint32 // spliceRxDone | spliceTxDone
	closed     atomic.Bool
	// slot is the relay's index in splicer.slots (-1: never registered)
	// and gen its registration number there; both are set once, under
	// splicer.mu, before any pump runs.
	slot int32
	gen  uint32
	why  string // close reason; written once by the closer, read by finish

	// fdmu guards the switch between the attached sockets (client,
	// upstream and the directions' raw) and the detached fds (cfd, ufd;
	// splice_detach.go). Raw calls on cfd and ufd hold it shared; detach,
	// attach and close hold it exclusively.
	fdmu     sync.RWMutex
	detached atomic.Bool
	cfd, ufd int32 // while detached: the client's and the upstream's fd
}

// spliceDir is one direction of a relay.
type spliceDir struct {
	r      *spliceRelay    // its source and destination are the relay's sockets (src, dst)
	raw    syscall.RawConn // the source's; nil when it has none
	n      atomic.Int64
	parked atomic.Bool // the pump waits in the runtime poller
	// watched is set once the source is registered in the epoll set.
	watched atomic.Bool
	// running is held by the direction's one pump, from its start until
	// it re-arms the direction; an epoll event for a direction whose
	// pump still runs (a detach re-registers both) starts no second one.
	running atomic.Bool
	// bulk is set after a read filled the buffer: the next bytes are
	// waited for without reading and spliced when many.
	bulk atomic.Bool
	rx   bool
}

// token is d's epoll user data: the relay's registration number, its
// slot and the direction. An event for a relay that has since finished,
// its slot maybe taken by another, names an old registration number and
// is ignored.
func (d *spliceDir) token() uint64 {
	t := uint64(d.r.gen)<<32 | uint64(uint32(d.r.slot))<<1
	if !d.rx {
		t |= 1
	}
	return t
}

// relay takes ownership of client and upstream (both already connected,
// the peeked ClientHello already replayed) and splices them until both
// directions reach EOF, a reset, an I/O error, the idle timeout (0 = none), the
// maximum duration counted from start (0 = none) or a close. onDone is called exactly once, from whichever goroutine ends the
// relay, after both sockets are closed and no pump runs any more; it may be
// called before relay returns, so the caller must not hold a lock onDone
// needs.
func (s *splicer) relay(client, upstream net.Conn, idle time.Duration, start time.Time, maxDuration time.Duration, onDone func(*spliceRelay)) *spliceRelay {
	r := &spliceRelay{sp: s, client: client, upstream: upstream, idle: max(idle, 0), tick: max(idle, 0), onDone: onDone, slot: -1}
	if maxDuration > 0 {
		r.expire = max(int64(start.Add(maxDuration).Sub(s.base)), 1)
		if r.tick == 0 || maxDuration < r.tick {
			r.tick = maxDuration
		}
	}
	r.rx = spliceDir{r: r, rx: true, raw: rawOf(client)}
	r.tx = spliceDir{r: r, raw: rawOf(upstream)}
	r.refs.Store(1)
	r.lastActive.Store(s.now())

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		r.close(closeShutdown)
		return r
	}
	if n := len(s.free); n > 0 {
		r.slot = s.free[n-1]
		s.free = s.free[:n-1]
		s.slots[r.slot] = r
	} else {
		r.slot = int32(len(s.slots))
		s.slots = append(s.slots, r)
	}
	s.gen++
	r.gen = s.gen
	crowded := s.nLive.Add(1) > s.crowd
	kick := r.tick > 0 && (s.minTick == 0 || r.tick < s.minTick)
	if kick {
		s.minTick = r.tick
	}
	s.mu.Unlock()
	if kick {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	// A new connection is busy (its TLS handshake is in flight), so both
	// pumps start at once and wait in the runtime poller, as io.Copy would;
	// going through epoll first would add a hop to every handshake flight.
	// They hand their direction to epoll after spliceParkFor of silence.
	// In a crowded splicer both directions start in epoll instead.
	// Its sockets then leave the runtime poller (detach) when they can.
	if crowded {
		r.fdmu.Lock()
		detached, err := r.detachLocked(nil)
		r.fdmu.Unlock()
		if err != nil {
			r.close(closeError)
			return r
		}
		if detached {
			return r
		}
		for _, d := range []*spliceDir{&r.rx, &r.tx} {
			d.watched.Store(true)
			if err := s.arm(d, unix.EPOLL_CTL_ADD); err != nil {
				r.close(closeError)
				break
			}
		}
		return r
	}
	s.spawn(func() { copyClientToUpstream(&r.rx) })
	s.spawn(func() { copyUpstreamToClient(&r.tx) })
	return r
}

// crowded reports whether so many relays are live that directions wait in
// epoll rather than in the runtime poller (spliceCrowd).
func (s *splicer) crowded() bool { return s.nLive.Load() > s.crowd }

// arm (op EPOLL_CTL_ADD) or re-arm (EPOLL_CTL_MOD) d's source for one
// readiness event. Both fds are held open for the duration of the call, so
// a concurrent close can never make it act on a reused fd number.
func (s *splicer) arm(d *spliceDir, op int) error {
	rc, err := d.srcRaw()
	if err != nil {
		return err
	}
	return s.ctlRaw(rc, op, d.token())
}

// pollLoop waits on the epoll fd through the runtime poller and starts a
// pump for every direction that became readable. It returns when the epoll
// file is closed.
func (s *splicer) pollLoop() {
	var evs [spliceEvents]unix.EpollEvent
	var waitErr error
	err := s.raw.Read(func(fd uintptr) bool {
		for {
			n, err := unix.EpollWait(int(fd), evs[:], 0)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				waitErr = err
				return true
			}
			for i := range n {
				s.dispatch(uint64(uint32(evs[i].Fd)) | uint64(uint32(evs[i].Pad))<<32)
			}
			if n < len(evs) {
				return false // drained; park in the runtime poller
			}
			// More is ready (thousands of connections closing at
			// once): let the pumps just started run and exit before
			// starting more, so their goroutines and stacks are reused
			// rather than thousands held at the same time.
			runtime.Gosched()
		}
	})
	if waitErr != nil {
		s.log.Error("sni: splice: epoll_wait failed; closing every relay", "err", waitErr)
		s.closeAll(closeError)
		return
	}
	select {
	case <-s.stop: // closed on purpose; err is "use of closed file"
	default:
		s.log.Error("sni: splice: poll loop ended", "err", err)
		s.closeAll(closeError)
	}
}

// dispatch starts the pump of the direction registered under token.
func (s *splicer) dispatch(token uint64) {
	slot := int(token >> 1 & (1<<31 - 1))
	s.mu.Lock()
	var r *spliceRelay
	if slot < len(s.slots) {
		r = s.slots[slot]
	}
	s.mu.Unlock()
	if r == nil || r.gen != uint32(token>>32) {
		return // relay already finished
	}
	d := &r.rx
	if token&1 != 0 {
		d = &r.tx
	}
	if d.rx {
		s.spawn(func() { copyClientToUpstream(d) })
	} else {
		s.spawn(func() { copyUpstreamToClient(d) })
	}
}

// copyClientToUpstream moves the bytes the client has sent so far to the
// upstream, then re-arms the client socket. It is a named function so
// that it shows in goroutine dumps.
func copyClientToUpstream(d *spliceDir) { d.pump() }

// copyUpstreamToClient moves the bytes the upstream has sent so far to the
// client, then re-arms the upstream socket. It is a named function so that
// it shows in goroutine dumps.
func copyUpstreamToClient(d *spliceDir) { d.pump() }

// pump drains d's source into its destination. It reads each burst
// straight into a pooled buffer (one read(2), which also tells EOF and
// "nothing yet" apart), writes it, and splices what is still queued when
// the burst filled the buffer. When nothing is queued it waits in the
// runtime poller, as io.Copy would, holding no buffer, so a busy
// connection costs no extra hop per burst; after spliceParkFor without a
// byte the sweeper ends that wait and the pump hands the direction back
// to epoll and exits. It stops at EOF (half-close) or an error (close the
// relay).
func (d *spliceDir) pump() {
	if !d.running.CompareAndSwap(false, true) {
		return // the direction's pump still runs and re-arms it after
	}
	r := d.r
	if !r.acquire() {
		return
	}
	defer r.release()
	// A detached relay's burst is moved on its raw fds; what needs a wait
	// (a full send buffer, bulk) goes on below, attached.
	bp, pending, done := d.rawPump()
	if done {
		return
	}
	for {
		var full, eof bool
		var err error
		if pending == nil { // else left by rawPump
			if d.bulk.Load() {
				// A bulk transfer: wait for bytes without reading them,
				// and splice them when there are many.
				n, eof, err := d.park()
				if d.ended(eof, err) {
					return
				}
				if n > spliceSmall {
					if !d.spliceQueued() {
						return
					}
					continue
				}
				d.bulk.Store(false)
			}
			bp, pending, full, eof, err = d.burst()
		}
		wrote := len(pending)
		if wrote > 0 {
			// The destination's send buffer filled: wait for it there.
			werr := d.write(pending)
			spliceBufs.Put(bp)
			bp, pending = nil, nil
			if werr != nil {
				r.fail(d.dst(), werr)
				return
			}
			d.count(int64(wrote))
			r.lastActive.Store(r.sp.now())
		}
		if d.ended(eof, err) {
			return
		}
		if full {
			// More is likely queued: splice it, and treat the next
			// bytes as bulk until a burst is small again.
			if !d.spliceQueued() {
				return
			}
			d.bulk.Store(true)
		} else if wrote == 0 && r.sp.crowded() {
			// The queue was drained by the last read; epoll is level
			// triggered, so bytes arriving from now on wake the
			// direction there.
			d.handOver()
			return
		}
	}
}

// ended acts on the outcome of a wait for the source and reports whether
// the pump must exit: an eviction hands the direction to epoll, an error
// fails the relay, EOF half-closes.
func (d *spliceDir) ended(eof bool, err error) bool {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		d.bulk.Store(false)
		d.handOver()
	case errors.Is(err, errRelayFailed):
	case err != nil:
		d.r.fail(d.src(), err)
	case eof:
		d.halfClose()
	default:
		return false
	}
	return true
}

// handOver moves d's wait to epoll after the sweeper evicted its pump
// (or a stale eviction): the pump exits holding nothing.
func (d *spliceDir) handOver() {
	r := d.r
	if err := d.src().SetReadDeadline(time.Time{}); err != nil {
		r.close(closeError)
		return
	}
	if r.sp.crowded() {
		r.fdmu.Lock()
		detached, err := r.detachLocked(d)
		r.fdmu.Unlock()
		if err != nil {
			r.close(closeError)
		}
		if detached || err != nil {
			return
		}
	}
	d.running.Store(false)
	op := unix.EPOLL_CTL_MOD
	if !d.watched.Swap(true) {
		op = unix.EPOLL_CTL_ADD // first hand-over to epoll
	}
	if err := r.sp.arm(d, op); err != nil {
		r.close(closeError)
	}
}

// park waits in the runtime poller until the source has bytes queued or
// reaches EOF, without reading them. The sweeper ends a long wait by
// setting a past read deadline: park then returns os.ErrDeadlineExceeded.
func (d *spliceDir) park() (n int, eof bool, err error) {
	rc, err := d.srcRaw()
	if err != nil {
		return 0, false, err
	}
	d.parked.Store(true)
	// The readiness check runs inside Read, after the poller was reset, so
	// bytes that arrive at any point either are seen here or wake the wait.
	rerr := rc.Read(func(fd uintptr) bool {
		n, eof, err = spliceInq(int(fd))
		return n > 0 || eof || err != nil
	})
	d.parked.Store(false)
	if rerr != nil {
		return 0, false, rerr
	}
	return n, eof, err
}

// spliceQueued moves what is still queued at the source after a full
// burst: bulk goes by splice(2), a small rest is left to the next read.
// It reports false when the relay was closed on an error.
func (d *spliceDir) spliceQueued() bool {
	r := d.r
	for {
		n, _, err := d.queued()
		if err != nil {
			r.fail(d.src(), err)
			return false
		}
		if n <= spliceSmall {
			return true
		}
		m, err := d.move(int64(min(n, spliceMaxChunk)))
		d.count(m)
		r.lastActive.Store(r.sp.now())
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// An eviction raced with new data; the bytes moved so far
			// are counted, the rest is still queued.
			if err := d.src().SetReadDeadline(time.Time{}); err != nil {
				r.close(closeError)
				return false
			}
			continue
		}
		if err != nil {
			// The bytes were already queued at the source, which hands
			// them over even after a reset; so the destination failed.
			r.fail(d.dst(), err)
			return false
		}
	}
}

// burst waits in the runtime poller until the source has bytes or
// reaches EOF, and moves them: each read goes into a pooled buffer and is
// written on at once, without blocking, from inside the wait, until a
// read finds nothing and the wait goes on. burst returns after a read that filled
// the buffer (full: more is likely queued); when the destination could not
// take everything (pending: the rest, in bp, which the caller writes and
// returns to spliceBufs); at EOF; on an error; or, when the splicer is
// crowded, after a drained read, so the direction can move to epoll. A
// waiting pump holds no buffer. The sweeper ends a long wait by setting a
// past read deadline: burst then returns os.ErrDeadlineExceeded. A failed
// write closes the relay (as the destination's failure) and returns
// errRelayFailed.
func (d *spliceDir) burst() (bp *[]byte, pending []byte, full, eof bool, err error) {
	rc, err := d.srcRaw()
	if err != nil {
		return nil, nil, false, false, err
	}
	wc := d.dstRaw()
	r := d.r
	var rerr, werr error
	d.parked.Store(true)
	xerr := rc.Read(func(fd uintptr) bool {
		for {
			if bp == nil {
				bp = spliceBufs.Get().(*[]byte)
			}
			var m int
			m, rerr = rawReadRetry(int(fd), *bp)
			switch {
			case errors.Is(rerr, unix.EAGAIN):
				rerr = nil
				spliceBufs.Put(bp)
				bp = nil
				return false // nothing queued: wait
			case rerr != nil || m <= 0:
				eof = rerr == nil
				return true
			}
			r.lastActive.Store(r.sp.now())
			w, err := d.tryWrite(wc, (*bp)[:m])
			d.count(int64(w))
			full = m == len(*bp)
			switch {
			case err != nil:
				werr = err
				return true
			case w < m:
				pending = (*bp)[w:m]
				return true
			}
			r.lastActive.Store(r.sp.now())
			if full || r.sp.crowded() {
				return true
			}
			// A short read leaves nothing but maybe the peer's FIN,
			// which only the next read reports: read again before
			// waiting.
		}
	})
	d.parked.Store(false)
	if len(pending) == 0 && bp != nil {
		spliceBufs.Put(bp)
		bp = nil
	}
	switch {
	case werr != nil:
		r.fail(d.dst(), werr)
		return nil, nil, false, false, errRelayFailed
	case xerr != nil:
		return bp, pending, false, false, xerr
	case rerr != nil:
		return bp, pending, false, false, os.NewSyscallError("read", rerr)
	}
	return bp, pending, full, eof, nil
}

// errRelayFailed says the relay was already closed on the destination's
// error: the pump just exits.
var errRelayFailed = errors.New("sni: splice: relay closed on a write error")

// tryWrite writes what of p the destination takes without waiting: all
// of it unless its send buffer fills. wc is the destination's raw
// connection; without one, p is written with a (possibly waiting) Write.
func (d *spliceDir) tryWrite(wc syscall.RawConn, p []byte) (int, error) {
	if wc == nil {
		return d.dst().Write(p)
	}
	var w int
	var werr error
	cerr := wc.Control(func(fd uintptr) { w, werr = rawWriteSome(int(fd), p) })
	if cerr != nil {
		return w, cerr
	}
	return w, werr
}

// write writes all of p to the destination, waiting in the runtime
// poller while its send buffer is full.
func (d *spliceDir) write(p []byte) error {
	rc := d.dstRaw()
	if rc == nil {
		_, err := d.dst().Write(p)
		return err
	}
	var werr error
	err := rc.Write(func(fd uintptr) bool {
		for len(p) > 0 {
			n, err := rawWrite(int(fd), p)
			switch {
			case errors.Is(err, unix.EINTR):
				continue
			case errors.Is(err, unix.EAGAIN):
				return false
			case err != nil:
				werr = os.NewSyscallError("write", err)
				return true
			}
			p = p[n:]
		}
		return true
	})
	if err != nil {
		return err
	}
	return werr
}

// closeWrite shuts down the destination's write side (a FIN for TCP).
func (d *spliceDir) closeWrite() error {
	rc := d.dstRaw()
	if rc == nil {
		cw, ok := d.dst().(interface{ CloseWrite() error })
		if !ok {
			return fmt.Errorf("sni: splice: %T cannot half-close", d.dst())
		}
		return cw.CloseWrite()
	}
	return shutdownWrite(rc)
}

// shutdownWrite shuts down rc's write side (a FIN for TCP).
func shutdownWrite(rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = rawShutdownWrite(int(fd)) }); err != nil {
		return err
	}
	if serr != nil {
		return os.NewSyscallError("shutdown", serr)
	}
	return nil
}

// dstRaw returns the destination's raw connection: the source of the
// relay's other direction. Nil when it has none.
func (d *spliceDir) dstRaw() syscall.RawConn {
	if d.rx {
		return d.r.tx.raw
	}
	return d.r.rx.raw
}

// src is the socket d reads: the client for rx, else the upstream.
func (d *spliceDir) src() net.Conn {
	if d.rx {
		return d.r.client
	}
	return d.r.upstream
}

// dst is the socket d writes: the other one.
func (d *spliceDir) dst() net.Conn {
	if d.rx {
		return d.r.upstream
	}
	return d.r.client
}

// srcRaw returns the source's raw connection, fetched when the relay
// started.
func (d *spliceDir) srcRaw() (syscall.RawConn, error) {
	if d.raw == nil {
		return nil, fmt.Errorf("sni: splice: %T has no raw fd", d.src())
	}
	return d.raw, nil
}

// rawOf returns c's raw connection, or nil when it has none.
func rawOf(c net.Conn) syscall.RawConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// queued reports how many bytes wait in the source's receive queue, or
// that the source reached EOF.
func (d *spliceDir) queued() (n int, eof bool, err error) {
	rc, err := d.srcRaw()
	if err != nil {
		return 0, false, err
	}
	cerr := rc.Control(func(fd uintptr) { n, eof, err = spliceInq(int(fd)) })
	if cerr != nil {
		return 0, false, cerr
	}
	return n, eof, err
}

// spliceInq returns the queued byte count of a stream socket, telling an
// empty queue (0, false) apart from EOF (0, true) with a one-byte peek.
func spliceInq(fd int) (int, bool, error) {
	for {
		n, err := rawInq(fd)
		if err != nil || n > 0 {
			return n, false, err
		}
		m, err := rawPeekByte(fd)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return 0, false, nil
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return 0, false, err
		case m == 0:
			return 0, true, nil
		}
		// Bytes arrived between the two calls: ask for the count again.
	}
}

// spliceBufs holds copy buffers for destinations splice(2) cannot feed
// (a client on a unix socket). Only a transfer in progress holds one.
var spliceBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// spliceSmall is the largest burst moved with read/write instead of
// splice(2).
const spliceSmall = 16 << 10

// move transfers exactly n queued bytes. Between two sockets it uses
// splice(2) through a pooled pipe (spliceSockets); the pipe returns to
// the pool when the call ends.
func (d *spliceDir) move(n int64) (int64, error) {
	lr := &io.LimitedReader{R: d.src(), N: n}
	// Small bursts (handshake flights, requests) cost fewer syscalls as
	// one read and one write than as two splices through a pipe, as
	// HAProxy's splice-auto also judges; bulk transfers are spliced.
	if tcpSocket(d.dst()) && n > spliceSmall {
		if src, dst := d.raw, d.dstRaw(); src != nil && dst != nil {
			return spliceSockets(src, dst, n)
		}
		if tc, ok := d.dst().(*net.TCPConn); ok {
			return tc.ReadFrom(lr)
		}
	}
	bp := spliceBufs.Get().(*[]byte)
	defer spliceBufs.Put(bp)
	return io.CopyBuffer(struct{ io.Writer }{d.dst()}, struct{ io.Reader }{lr}, *bp)
}

// count adds m transferred bytes to the direction and the metrics.
func (d *spliceDir) count(m int64) {
	if m <= 0 {
		return
	}
	d.n.Add(m)
	if d.rx {
		d.r.sp.rxBytes.Add(float64(m))
	} else {
		d.r.sp.txBytes.Add(float64(m))
	}
}

// halfClose forwards an EOF: it shuts down the destination's write side
// and closes the relay once both directions are done.
func (d *spliceDir) halfClose() {
	r := d.r
	// Marked before the FIN goes out: the destination may react to it at
	// once (close, reset), and fail must then find this side finished.
	if d.markEOF() {
		// Both sides are done. The destination's own source reached
		// EOF, so nothing is left unread in its receive queue and
		// closing it sends the FIN a shutdown would have sent.
		r.close(closeEOF)
		return
	}
	if err := d.closeWrite(); err != nil {
		r.fail(d.dst(), err)
	}
}

// markEOF records that d's source reached EOF and reports whether the
// other direction had already.
func (d *spliceDir) markEOF() (both bool) {
	bit := uint32(spliceTxDone)
	if d.rx {
		bit = spliceRxDone
	}
	return d.r.eofs.Or(bit)|bit == spliceRxDone|spliceTxDone
}

// fail closes the relay after an I/O error on c, one of its two sockets,
// with the reason closeForError gives. A side has finished if its pump saw
// its FIN (the relay's EOF bits) or, when the pump has not got there yet,
// if the kernel says so: c's peer sent a FIN before its reset
// (spliceFinished), or the other socket has received its peer's FIN
// (spliceFinReceived).
func (r *spliceRelay) fail(c net.Conn, err error) {
	if r.closed.Load() {
		return // closed on purpose; err is the consequence
	}
	other := r.client
	if c == r.client {
		other = r.upstream
	}
	finished := r.eofs.Load() != 0 || spliceFinished(c, err) || spliceFinReceived(other)
	r.close(closeForError(err, c == r.client, finished))
}

// spliceFinReceived reports whether c is a TCP socket whose peer's FIN has
// arrived (the kernel's state says so even while bytes before it are still
// queued).
func spliceFinReceived(c net.Conn) bool {
	if !tcpSocket(c) {
		return false
	}
	rc := rawOf(c)
	if rc == nil {
		return false
	}
	var info *unix.TCPInfo
	var gerr error
	if cerr := rc.Control(func(fd uintptr) { info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); cerr != nil || gerr != nil {
		return false
	}
	switch info.State {
	case unix.BPF_TCP_CLOSE_WAIT, unix.BPF_TCP_LAST_ACK, unix.BPF_TCP_CLOSING, unix.BPF_TCP_TIME_WAIT:
		return true
	}
	return false
}

// spliceFinished reports whether err, an error writing to or shutting down
// c, shows that c's peer had sent its FIN before it reset the connection.
// Linux records a reset that arrives after the peer's FIN (CLOSE_WAIT) as
// EPIPE, any other reset as ECONNRESET; the first write after the reset
// returns that error, while shutdown(2) on the dead socket returns ENOTCONN
// and leaves it pending in SO_ERROR. (A read never reports either once the
// FIN is in: it returns EOF.)
func spliceFinished(c net.Conn, err error) bool {
	switch {
	case errors.Is(err, unix.EPIPE):
		return true
	case !errors.Is(err, unix.ENOTCONN):
		return false
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, rerr := sc.SyscallConn()
	if rerr != nil {
		return false
	}
	var soErr int
	var gerr error
	if cerr := rc.Control(func(fd uintptr) { soErr, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR) }); cerr != nil || gerr != nil {
		return false
	}
	return syscall.Errno(soErr) == unix.EPIPE
}

// acquire registers a running pump; it fails once the relay is closed.
func (r *spliceRelay) acquire() bool {
	for {
		n := r.refs.Load()
		if n <= 0 || r.closed.Load() {
			return false
		}
		if r.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// release drops a reference; the last one finishes the relay.
func (r *spliceRelay) release() {
	if r.refs.Add(-1) == 0 {
		r.sp.forget(r)
		if r.onDone != nil {
			r.onDone(r)
		}
	}
}

// close ends the relay for reason why: both sockets are closed, which
// stops any running pump. Only the first call has an effect.
func (r *spliceRelay) close(why string) {
	if !r.closed.CompareAndSwap(false, true) {
		return
	}
	r.why = why
	r.fdmu.Lock()
	if r.detached.Load() {
		_ = unix.Close(int(r.cfd))
		_ = unix.Close(int(r.ufd))
	} else {
		_ = r.client.Close()
		_ = r.upstream.Close()
	}
	r.fdmu.Unlock()
	r.release()
}

// forget drops a finished relay's registrations.
func (s *splicer) forget(r *spliceRelay) {
	s.mu.Lock()
	if r.slot >= 0 && s.slots[r.slot] == r {
		s.slots[r.slot] = nil
		s.free = append(s.free, r.slot)
		s.nLive.Add(-1)
	}
	s.mu.Unlock()
}

// closeAll closes every live relay with reason why.
func (s *splicer) closeAll(why string) {
	s.mu.Lock()
	rs := make([]*spliceRelay, 0, s.nLive.Load())
	for _, r := range s.slots {
		if r != nil {
			rs = append(rs, r)
		}
	}
	s.mu.Unlock()
	for _, r := range rs {
		r.close(why)
	}
}

// sweepLoop closes relays idle for longer than their timeout or older
// than their maximum duration.
func (s *splicer) sweepLoop() {
	t := time.NewTimer(spliceMaxSweep)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-s.kick:
		case <-t.C:
		}
		t.Reset(s.sweep())
	}
}

// sweep closes stale relays and returns the time until the next sweep.
func (s *splicer) sweep() time.Duration {
	now := s.now()
	var idle, old, park []*spliceRelay
	var minTick time.Duration
	s.mu.Lock()
	for _, r := range s.slots {
		if r == nil {
			continue
		}
		if r.tick > 0 && (minTick == 0 || r.tick < minTick) {
			minTick = r.tick
		}
		quiet := now - r.lastActive.Load()
		switch {
		case r.expire > 0 && now >= r.expire:
			old = append(old, r)
		case r.idle > 0 && quiet >= int64(r.idle):
			idle = append(idle, r)
		case quiet >= int64(spliceParkFor) && (r.rx.parked.Load() || r.tx.parked.Load()):
			park = append(park, r)
		}
	}
	s.minTick = minTick
	s.mu.Unlock()
	for _, r := range old {
		r.close(closeMaxDuration)
	}
	for _, r := range idle {
		r.close(closeIdle)
	}
	for _, r := range park {
		r.evict()
	}
	if live := s.nLive.Load(); s.mem.observe(live, time.Now()) {
		start := time.Now()
		returnMemory()
		s.log.Debug("sni: connections drained; memory returned to the OS", "live", live, "took", time.Since(start))
	}
	return spliceSweepPeriod(minTick)
}

// spliceLongAgo is a read deadline in the past, to end a parked wait.
var spliceLongAgo = time.Unix(1, 0)

// spliceSweepPeriod is a quarter of the shortest idle timeout or maximum
// duration, clamped to [5ms, 1s]; 1s when no relay has either.
func spliceSweepPeriod(minTick time.Duration) time.Duration {
	if minTick <= 0 {
		return spliceMaxSweep
	}
	return min(max(minTick/4, spliceMinSweep), spliceMaxSweep)
}

// close closes every relay (reason "closed"), then stops the poll loop and
// the sweeper. The caller waits for them through its spawn group.
func (s *splicer) close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	s.closeAll(closeShutdown)
	close(s.stop)
	_ = s.epoll.Close()
}

// live returns the number of relays not yet finished.
func (s *splicer) live() int {
	return int(s.nLive.Load())
}
