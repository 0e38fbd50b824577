package sni

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshgate/meshgate/sni/snitest"
)

// spliceThrough moves n bytes written into one connection out of another
// with spliceSockets and returns what the far end read and the result.
func spliceThrough(t *testing.T, payload []byte, n int64, closeAfter bool) (got []byte, moved int64, err error) {
	t.Helper()
	in, src := spliceTCPPair(t)
	dst, out := spliceTCPPair(t)
	go func() {
		_, _ = in.Write(payload)
		if closeAfter {
			_ = in.CloseWrite()
		}
	}()
	readDone := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(out)
		readDone <- b
	}()
	_ = src.SetReadDeadline(time.Now().Add(20 * time.Second)) // a wedge fails, not hangs
	moved, err = spliceSockets(rawOf(src), rawOf(dst), n)
	_ = dst.CloseWrite()
	select {
	case got = <-readDone:
	case <-time.After(20 * time.Second):
		t.Fatal("far end never saw EOF")
	}
	return got, moved, err
}

func TestSpliceSocketsMovesExactly(t *testing.T) {
	payload := make([]byte, 3<<20+12345) // more than a pipe's worth, not a multiple of it
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	got, moved, err := spliceThrough(t, payload, int64(len(payload)), false)
	if err != nil || moved != int64(len(payload)) {
		t.Fatalf("spliceSockets = %d, %v; want %d, nil", moved, err, len(payload))
	}
	if sha256.Sum256(got) != sha256.Sum256(payload) {
		t.Fatalf("the far end read %d bytes that differ from the %d sent", len(got), len(payload))
	}

	// A limit below what is queued moves exactly the limit.
	got, moved, err = spliceThrough(t, payload[:100000], 4096, false)
	if err != nil || moved != 4096 || !bytes.Equal(got, payload[:4096]) {
		t.Fatalf("limited spliceSockets = %d (%d read), %v; want 4096", moved, len(got), err)
	}
}

func TestSpliceSocketsStopsAtEOF(t *testing.T) {
	got, moved, err := spliceThrough(t, []byte("short"), 1<<20, true)
	if err != nil || moved != 5 || string(got) != "short" {
		t.Fatalf("spliceSockets to EOF = %d %q, %v; want 5 short", moved, got, err)
	}
}

// A destination that was reset fails the transfer, and the pipe left
// holding its bytes is not used again: the next transfer carries only its
// own bytes. One P makes the pool hand back the pipe it was last given.
func TestSpliceSocketsResetDestination(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	in, src := spliceTCPPair(t)
	dst, out := spliceTCPPair(t)
	_ = out.SetLinger(0)
	_ = out.Close() // RST to dst
	snitest.WaitFor(t, "the reset to reach the destination", func() bool {
		_, err := dst.Write([]byte{0})
		return err != nil
	})
	stale := bytes.Repeat([]byte("stale!"), 20000)
	if _, err := in.Write(stale); err != nil {
		t.Fatal(err)
	}
	_ = src.SetReadDeadline(time.Now().Add(20 * time.Second))
	moved, err := spliceSockets(rawOf(src), rawOf(dst), int64(len(stale)))
	if err == nil {
		t.Fatalf("spliceSockets into a reset socket moved %d bytes and no error", moved)
	}
	if !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("spliceSockets into a reset socket: %v; want EPIPE or ECONNRESET", err)
	}
	if !strings.Contains(err.Error(), "splice") {
		t.Fatalf("error %q does not name splice", err)
	}

	fresh := bytes.Repeat([]byte("fresh."), 30000)
	for range 3 { // the pool would hand a dirty pipe back on one of these
		got, moved, err := spliceThrough(t, fresh, int64(len(fresh)), false)
		if err != nil || moved != int64(len(fresh)) || !bytes.Equal(got, fresh) {
			t.Fatalf("transfer after a failed one = %d (%d read, stale bytes: %v), %v", moved, len(got), bytes.Contains(got, []byte("stale")), err)
		}
	}
}

// The source's read deadline ends a wait for bytes that never come, with
// nothing moved.
func TestSpliceSocketsDeadline(t *testing.T) {
	_, src := spliceTCPPair(t)
	dst, _ := spliceTCPPair(t)
	_ = src.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	moved, err := spliceSockets(rawOf(src), rawOf(dst), 1000)
	if moved != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("spliceSockets with nothing to read = %d, %v; want 0, deadline exceeded", moved, err)
	}
}
