// Package snitest provides test harness pieces for the sni proxy: a
// throw-away CA, TLS and plain-TCP echo backends on loopback, real
// ClientHello bytes, and small helpers for waiting on conditions and
// counting file descriptors and goroutines.
//
// Everything listens on 127.0.0.1 only. Typical use:
//
//	ca := snitest.NewCA(t)
//	be := snitest.NewTLSBackend(t, ca, "a.example.com")
//	conn, err := tls.Dial("tcp", proxyAddr, ca.ClientConfig("a.example.com"))
//
// The package does not import sni, so sni's own tests can use it.
package snitest

import (
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"os"
	"runtime"
	"testing"
	"time"
)

// ClientHello returns the first TLS record a crypto/tls client sends for
// serverName with the given ALPN list: a real ClientHello, as a proxy would
// see it on the wire.
func ClientHello(tb testing.TB, serverName string, alpn ...string) []byte {
	tb.Helper()
	cli, srv := net.Pipe()
	defer cli.Close()
	defer srv.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c := tls.Client(cli, &tls.Config{ServerName: serverName, NextProtos: alpn, InsecureSkipVerify: true})
		_ = c.Handshake() // fails once srv closes
	}()
	var hdr [5]byte
	if _, err := io.ReadFull(srv, hdr[:]); err != nil {
		tb.Fatalf("snitest: read ClientHello header: %v", err)
	}
	rec := make([]byte, 5+int(binary.BigEndian.Uint16(hdr[3:5])))
	copy(rec, hdr[:])
	if _, err := io.ReadFull(srv, rec[5:]); err != nil {
		tb.Fatalf("snitest: read ClientHello body: %v", err)
	}
	_ = srv.Close()
	<-done
	return rec
}

// ClosedAddr returns a loopback "host:port" where nothing listens: the port
// was bound and released, so a dial there is refused.
func ClosedAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("snitest: listen: %v", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		tb.Fatalf("snitest: close: %v", err)
	}
	return addr
}

// WaitFor polls cond until it returns true, failing tb with what after
// 20 seconds. The bound only catches hangs; tests must not depend on it
// for timing.
func WaitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for delay := time.Millisecond; !cond(); delay = min(2*delay, 50*time.Millisecond) {
		if time.Now().After(deadline) {
			tb.Fatalf("snitest: timed out waiting for %s", what)
		}
		time.Sleep(delay)
	}
}

// OpenFDs returns the number of open file descriptors of this process
// (entries of /proc/self/fd), or -1 where that is not available.
func OpenFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents) - 1 // the directory handle ReadDir itself held
}

// Goroutines returns runtime.NumGoroutine.
func Goroutines() int { return runtime.NumGoroutine() }

// CheckNoLeaks records the goroutine and fd counts now and, at cleanup,
// waits for both to come back to at most those values, failing tb
// otherwise. It runs the garbage collector while waiting, because the
// runtime pools splice(2) pipes (two fds each) until a collection frees
// them. Call it first in a test, so that its cleanup runs after every other
// cleanup of the test.
func CheckNoLeaks(tb testing.TB) {
	tb.Helper()
	g0, f0 := Goroutines(), OpenFDs()
	tb.Cleanup(func() {
		deadline := time.Now().Add(20 * time.Second)
		for {
			g, f := Goroutines(), OpenFDs()
			if g <= g0 && f <= f0 {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				tb.Errorf("snitest: leak: goroutines %d (baseline %d), fds %d (baseline %d)\n%s", g, g0, f, f0, buf)
				return
			}
			runtime.GC()
			time.Sleep(5 * time.Millisecond)
		}
	})
}
