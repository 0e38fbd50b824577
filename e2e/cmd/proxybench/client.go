package main

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// dialTimeout bounds one TCP connect.
	dialTimeout = 5 * time.Second
	// exchangeTimeout bounds one handshake plus ping.
	exchangeTimeout = 10 * time.Second
	// ackTimeout bounds the wait for the sink's byte count after half-close.
	ackTimeout = 30 * time.Second
	// writeChunk is the size of one write of the throughput client.
	writeChunk = 256 << 10
)

// errShortAck says the sink counted fewer bytes than the client sent.
var errShortAck = errors.New("proxybench: sink acknowledged a different byte count")

// exchange dials addr, completes a full TLS handshake with cfg (SNI =
// cfg.ServerName), sends one ping and reads the answer. It returns the open
// connection and the time from dial to answer.
func exchange(ctx context.Context, addr string, cfg *tls.Config) (*tls.Conn, time.Duration, error) {
	start := time.Now()
	d := net.Dialer{Timeout: dialTimeout}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, 0, fmt.Errorf("proxybench: dial %s: %w", addr, err)
	}
	_ = raw.SetDeadline(start.Add(exchangeTimeout))
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, 0, fmt.Errorf("proxybench: TLS handshake via %s: %w", addr, err)
	}
	if _, err := tc.Write([]byte{cmdPing}); err != nil {
		raw.Close()
		return nil, 0, fmt.Errorf("proxybench: write ping via %s: %w", addr, err)
	}
	var b [1]byte
	if _, err := io.ReadFull(tc, b[:]); err != nil || b[0] != ackByte {
		raw.Close()
		if err == nil {
			err = fmt.Errorf("got %q, want %q", b[0], ackByte)
		}
		return nil, 0, fmt.Errorf("proxybench: read answer via %s: %w", addr, err)
	}
	lat := time.Since(start)
	_ = raw.SetDeadline(time.Time{})
	return tc, lat, nil
}

// handshakeRun is what one cell of the handshake test measured.
type handshakeRun struct {
	Conns     int64
	Errors    int64
	FirstErr  error
	Elapsed   time.Duration
	Latencies []time.Duration
}

// runHandshakes runs conc workers that each loop: exchange, close. Workers
// start no exchange after d or after maxConns in all; exchanges in flight
// then finish (each is bounded by exchangeTimeout) and count, and Elapsed
// runs until the last one ends. ctx cancels everything.
func runHandshakes(ctx context.Context, addr string, cfg *tls.Config, conc int, d time.Duration, maxConns int64) handshakeRun {
	begin := time.Now()
	end := begin.Add(d)
	var (
		started atomic.Int64
		mu      sync.Mutex // guards run
		run     handshakeRun
		wg      sync.WaitGroup
	)
	for range conc {
		wg.Go(func() {
			var lats []time.Duration
			var errs int64
			var firstErr error
			for ctx.Err() == nil && time.Now().Before(end) && started.Add(1) <= maxConns {
				c, lat, err := exchange(ctx, addr, cfg)
				if err != nil {
					if ctx.Err() != nil {
						break
					}
					errs++
					if firstErr == nil {
						firstErr = err
					}
					continue
				}
				c.Close()
				lats = append(lats, lat)
			}
			mu.Lock()
			run.Latencies = append(run.Latencies, lats...)
			run.Errors += errs
			if run.FirstErr == nil {
				run.FirstErr = firstErr
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	run.Elapsed = time.Since(begin)
	run.Conns = int64(len(run.Latencies))
	return run
}

// percentile returns the q-quantile (0..1) of sorted, or 0 when empty.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q * float64(len(sorted)-1))
	return sorted[max(0, min(i, len(sorted)-1))]
}

// throughputRun is what one cell of the throughput test measured.
type throughputRun struct {
	Bytes    int64
	Errors   int64
	FirstErr error
	Elapsed  time.Duration
}

// clientHello returns the first TLS record a Go client with cfg writes: its
// ClientHello, as sent on the wire.
func clientHello(cfg *tls.Config) ([]byte, error) {
	a, b := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = tls.Client(a, cfg).Handshake() // fails once b closes
		a.Close()
	}()
	defer func() { b.Close(); <-done }()
	_ = b.SetDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(b, hdr); err != nil {
		return nil, fmt.Errorf("proxybench: capture ClientHello: %w", err)
	}
	if hdr[0] != recordHandshake {
		return nil, fmt.Errorf("proxybench: capture ClientHello: record type %d", hdr[0])
	}
	body := make([]byte, binary.BigEndian.Uint16(hdr[3:]))
	if _, err := io.ReadFull(b, body); err != nil {
		return nil, fmt.Errorf("proxybench: capture ClientHello: %w", err)
	}
	return append(hdr, body...), nil
}

// runThroughput opens streams connections to addr; each sends hello, then
// plain bytes for d (at least one chunk, at most maxBytes), half-closes and waits for the sink's
// count. Bytes counts only what the sink acknowledged.
func runThroughput(ctx context.Context, addr string, hello []byte, streams int, d time.Duration, maxBytes int64) throughputRun {
	chunk := make([]byte, writeChunk)
	for i := range chunk {
		chunk[i] = byte(i)
	}
	return runStreams(streams, d, func(until time.Time) (int64, error) {
		return oneStream(ctx, addr, hello, chunk, until, maxBytes)
	})
}

// runStreams runs one(until) on streams goroutines at once, until = now + d,
// and sums what they moved; errors are counted and the first one kept.
func runStreams(streams int, d time.Duration, one func(until time.Time) (int64, error)) throughputRun {
	var (
		mu  sync.Mutex // guards run
		run throughputRun
		wg  sync.WaitGroup
	)
	begin := time.Now()
	for range streams {
		wg.Go(func() {
			n, err := one(begin.Add(d))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				run.Errors++
				if run.FirstErr == nil {
					run.FirstErr = err
				}
				return
			}
			run.Bytes += n
		})
	}
	wg.Wait()
	run.Elapsed = time.Since(begin)
	return run
}

// oneStream is one connection of runThroughput.
func oneStream(ctx context.Context, addr string, hello, chunk []byte, until time.Time, maxBytes int64) (int64, error) {
	dl := net.Dialer{Timeout: dialTimeout}
	c, err := dl.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, fmt.Errorf("proxybench: dial %s: %w", addr, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	_ = c.SetDeadline(until.Add(ackTimeout))
	if _, err := c.Write(hello); err != nil {
		return 0, fmt.Errorf("proxybench: write ClientHello to %s: %w", addr, err)
	}
	// At least one chunk goes out even when connecting took the whole cell.
	var sent int64
	for {
		k, err := c.Write(chunk[:min(int64(len(chunk)), maxBytes-sent)])
		sent += int64(k)
		if err != nil {
			return 0, fmt.Errorf("proxybench: stream to %s after %d bytes: %w", addr, sent, err)
		}
		if sent >= maxBytes || !time.Now().Before(until) {
			break
		}
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return 0, fmt.Errorf("proxybench: half-close to %s: %w", addr, err)
	}
	var ack [8]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		return 0, fmt.Errorf("proxybench: read count from %s after half-close: %w", addr, err)
	}
	if got := int64(binary.BigEndian.Uint64(ack[:])); got != sent {
		return 0, fmt.Errorf("%w: sent %d, sink counted %d", errShortAck, sent, got)
	}
	return sent, nil
}

// openIdle opens up to n connections through addr with workers in parallel,
// each with a completed handshake and one ping answered, and leaves them
// open. It stops early at the deadline of ctx or after maxErrors failures.
func openIdle(ctx context.Context, addr string, cfg *tls.Config, n, workers int, maxErrors int64) ([]*tls.Conn, int64, error) {
	var (
		next     atomic.Int64
		errs     atomic.Int64
		mu       sync.Mutex // guards conns and firstErr
		conns    = make([]*tls.Conn, 0, n)
		firstErr error
		wg       sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil && errs.Load() < maxErrors && next.Add(1) <= int64(n) {
				c, _, err := exchange(ctx, addr, cfg)
				mu.Lock()
				if err != nil {
					errs.Add(1)
					if firstErr == nil {
						firstErr = err
					}
				} else {
					conns = append(conns, c)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return conns, errs.Load(), firstErr
}

// closeAll closes conns in parallel.
func closeAll(conns []*tls.Conn) {
	var wg sync.WaitGroup
	const workers = 8
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(conns); i += workers {
				_ = conns[i].NetConn().SetDeadline(time.Now().Add(time.Second))
				conns[i].Close()
			}
		})
	}
	wg.Wait()
}

// runDownload opens streams TLS connections through addr with cfg; each
// asks the backend for a download of at most maxBytes, reads for d, sends
// its stop and reads to close_notify. Bytes counts only payload whose count
// matched the backend's trailer.
func runDownload(ctx context.Context, addr string, cfg *tls.Config, streams int, d time.Duration, maxBytes int64) throughputRun {
	return runStreams(streams, d, func(until time.Time) (int64, error) {
		return downloadStream(ctx, addr, cfg, until, maxBytes)
	})
}

// downloadReadSize is the client's read buffer for downloads.
const downloadReadSize = 256 << 10

// downloadStream is one connection of runDownload. It returns the payload
// received, after checking it against the trailer (the last 8 bytes).
func downloadStream(ctx context.Context, addr string, cfg *tls.Config, until time.Time, maxBytes int64) (int64, error) {
	dl := net.Dialer{Timeout: dialTimeout}
	raw, err := dl.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, fmt.Errorf("proxybench: dial %s: %w", addr, err)
	}
	defer raw.Close()
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Now()) })
	defer stop()
	_ = raw.SetDeadline(until.Add(ackTimeout))
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return 0, fmt.Errorf("proxybench: TLS handshake via %s: %w", addr, err)
	}
	req := make([]byte, 9)
	req[0] = cmdDownload
	binary.BigEndian.PutUint64(req[1:], uint64(max(maxBytes, 0)))
	if _, err := tc.Write(req); err != nil {
		return 0, fmt.Errorf("proxybench: download request via %s: %w", addr, err)
	}
	buf := make([]byte, downloadReadSize)
	var (
		total   int64
		tail    [8]byte // the last 8 bytes received
		stopped bool
	)
	for {
		k, err := tc.Read(buf)
		if k >= len(tail) {
			copy(tail[:], buf[k-len(tail):k])
		} else if k > 0 {
			copy(tail[:], tail[k:])
			copy(tail[len(tail)-k:], buf[:k])
		}
		total += int64(k)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("proxybench: download via %s after %d bytes: %w", addr, total, err)
		}
		if !stopped && !time.Now().Before(until) {
			stopped = true
			if _, err := tc.Write([]byte{'S'}); err != nil {
				return 0, fmt.Errorf("proxybench: download stop via %s after %d bytes: %w", addr, total, err)
			}
		}
	}
	return checkTrailer(total, tail)
}

// checkTrailer splits what a download received (total bytes, the last 8
// of them in tail) into payload and trailer, and returns the payload count
// when the trailer states it.
func checkTrailer(total int64, tail [8]byte) (int64, error) {
	if total < int64(len(tail)) {
		return 0, fmt.Errorf("%w: download ended after %d bytes, before its 8-byte trailer", errShortAck, total)
	}
	payload := total - int64(len(tail))
	if got := binary.BigEndian.Uint64(tail[:]); got != uint64(payload) {
		return 0, fmt.Errorf("%w: received %d payload bytes, backend sent %d", errShortAck, payload, got)
	}
	return payload, nil
}
