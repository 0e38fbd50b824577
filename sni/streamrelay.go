package sni

// A generic relay for connections whose upstream is not a raw socket (a
// bridge stream): two copy goroutines over net.Conn, half-close through
// CloseWrite, idle timeout, maximum duration, byte counts and a close
// reason. TCP-to-TCP connections keep the splice path (splice.go), which
// holds no goroutine while idle; a bridged connection already holds the
// tunnel's stream state, so two goroutines and two 32 KiB buffers are
// its price here.

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// streamBufSize is the copy buffer of one direction.
const streamBufSize = 32 << 10

// streamRelay is one relayed connection. Its methods are safe for
// concurrent use.
type streamRelay struct {
	client, upstream net.Conn
	rx, tx           atomic.Int64 // client→upstream, upstream→client
	base             time.Time
	lastActive       atomic.Int64 // since base
	rxBytes, txBytes prometheus.Counter

	mu     sync.Mutex // guards why, closed
	why    string
	closed bool
	stop   chan struct{} // closed by close: ends the watchdog
}

// streamRelayStart relays client and upstream (both connected, the hello
// already replayed) until both directions reach EOF, an I/O error, the
// idle timeout (0 = none), the maximum duration counted from start (0 =
// none) or close. It starts its goroutines with spawn (owned and waited
// for by the server); onDone runs once, after both connections are
// closed and both copies have ended, from a relay goroutine.
func streamRelayStart(spawn func(func()), client, upstream net.Conn, idle time.Duration, start time.Time, maxDuration time.Duration,
	rxBytes, txBytes prometheus.Counter, onDone func(*streamRelay)) *streamRelay {
	r := &streamRelay{client: client, upstream: upstream, base: time.Now(), rxBytes: rxBytes, txBytes: txBytes, stop: make(chan struct{})}
	var copies sync.WaitGroup
	copies.Add(2)
	spawn(func() { defer copies.Done(); r.copyRx() })
	spawn(func() { defer copies.Done(); r.copyTx() })
	spawn(func() {
		copied := make(chan struct{})
		spawn(func() { copies.Wait(); close(copied) })
		r.watch(copied, idle, start, maxDuration)
		copies.Wait()
		_ = client.Close()
		_ = upstream.Close()
		onDone(r)
	})
	return r
}

// copyRx copies client → upstream.
func (r *streamRelay) copyRx() { r.copy(r.upstream, r.client, &r.rx, r.rxBytes) }

// copyTx copies upstream → client.
func (r *streamRelay) copyTx() { r.copy(r.client, r.upstream, &r.tx, r.txBytes) }

// copy moves bytes from src to dst until EOF (then half-closes dst) or an
// error (then closes the relay).
func (r *streamRelay) copy(dst, src net.Conn, n *atomic.Int64, c prometheus.Counter) {
	buf := make([]byte, streamBufSize)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			r.lastActive.Store(int64(time.Since(r.base)))
			w, werr := dst.Write(buf[:k])
			n.Add(int64(w))
			if c != nil {
				c.Add(float64(w))
			}
			if werr != nil {
				r.close(closeError)
				return
			}
		}
		if errors.Is(err, io.EOF) {
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				if cw.CloseWrite() == nil {
					return
				}
			}
			r.close(closeError) // cannot half-close: end the relay
			return
		}
		if err != nil {
			r.close(closeError)
			return
		}
	}
}

// watch enforces the idle timeout and maximum duration until both copies
// end or the relay is closed.
func (r *streamRelay) watch(copied <-chan struct{}, idle time.Duration, start time.Time, maxDuration time.Duration) {
	var deadline time.Time
	if maxDuration > 0 {
		deadline = start.Add(maxDuration)
	}
	for {
		var wait time.Duration = -1
		now := time.Now()
		if idle > 0 {
			last := r.base.Add(time.Duration(r.lastActive.Load()))
			if now.Sub(last) >= idle {
				r.close(closeIdle)
				<-copied
				return
			}
			wait = last.Add(idle).Sub(now)
		}
		if !deadline.IsZero() {
			if !now.Before(deadline) {
				r.close(closeMaxDuration)
				<-copied
				return
			}
			if d := deadline.Sub(now); wait < 0 || d < wait {
				wait = d
			}
		}
		var tc <-chan time.Time
		var t *time.Timer
		if wait >= 0 {
			t = time.NewTimer(wait)
			tc = t.C
		}
		select {
		case <-copied:
			if t != nil {
				t.Stop()
			}
			return
		case <-r.stop:
			if t != nil {
				t.Stop()
			}
			<-copied
			return
		case <-tc:
		}
	}
}

// close ends the relay with reason why (the first reason wins) by
// closing both connections, which ends both copies.
func (r *streamRelay) close(why string) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed, r.why = true, why
	close(r.stop)
	r.mu.Unlock()
	_ = r.client.Close()
	_ = r.upstream.Close()
}

// reason returns why the relay ended: the close reason, or closeEOF when
// both directions finished.
func (r *streamRelay) reason() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.why == "" {
		return closeEOF
	}
	return r.why
}
