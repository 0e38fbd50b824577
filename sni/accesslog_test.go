package sni

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/meshgate/meshgate/sni/snitest"
)

// TestCloseForError: the classifier of splice I/O errors, with errors
// wrapped the way net and os wrap them.
func TestCloseForError(t *testing.T) {
	op := func(name string, errno syscall.Errno) error {
		return &net.OpError{Op: name, Net: "tcp", Err: os.NewSyscallError(name, errno)}
	}
	for _, tc := range []struct {
		name     string
		err      error
		client   bool
		finished bool
		want     string
	}{
		{"client reset while open", op("read", syscall.ECONNRESET), true, false, closeClientReset},
		{"upstream reset while open", op("read", syscall.ECONNRESET), false, false, closeUpstreamReset},
		{"write to reset client", op("write", syscall.ECONNRESET), true, false, closeClientReset},
		{"broken pipe to upstream", op("write", syscall.EPIPE), false, false, closeUpstreamReset},
		{"splice into reset upstream", op("readfrom", syscall.EPIPE), false, false, closeUpstreamReset},
		{"reset after a FIN", op("write", syscall.ECONNRESET), true, true, closeEOF},
		{"broken pipe after a FIN", op("write", syscall.EPIPE), false, true, closeEOF},
		{"shutdown of a dead client after a FIN", op("shutdown", syscall.ENOTCONN), true, true, closeEOF},
		{"shutdown of a dead upstream while open", op("shutdown", syscall.ENOTCONN), false, false, closeUpstreamReset},
		{"bare errno", syscall.ECONNRESET, true, false, closeClientReset},
		{"keep-alive timeout", op("read", syscall.ETIMEDOUT), false, false, closeError},
		{"keep-alive timeout after a FIN", op("read", syscall.ETIMEDOUT), false, true, closeError},
		{"host unreachable", op("write", syscall.EHOSTUNREACH), true, false, closeError},
		{"closed socket", net.ErrClosed, true, true, closeError},
		{"deadline", os.ErrDeadlineExceeded, false, false, closeError},
		{"plain EOF is not a failure kind", io.EOF, true, true, closeError},
		{"nil", nil, false, false, closeError},
		{"joined reset", errors.Join(errors.New("sni: x"), op("read", syscall.ECONNRESET)), false, false, closeUpstreamReset},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := closeForError(tc.err, tc.client, tc.finished); got != tc.want {
				t.Fatalf("closeForError(%v, client=%v, finished=%v) = %q, want %q", tc.err, tc.client, tc.finished, got, tc.want)
			}
		})
	}
}

// tcpState returns the TCP state (unix.BPF_TCP_*) of c's socket.
func tcpState(t *testing.T, c *net.TCPConn) uint8 {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatalf("SyscallConn: %v", err)
	}
	var info *unix.TCPInfo
	var gerr error
	if err := rc.Control(func(fd uintptr) { info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil || gerr != nil {
		t.Fatalf("TCP_INFO: %v %v", err, gerr)
	}
	return info.State
}

// TestSpliceFinishedKernel pins the kernel behaviour spliceFinished relies
// on: a reset after the peer's FIN is reported as EPIPE, one without a FIN
// as ECONNRESET; shutdown(2) on the dead socket says ENOTCONN and leaves the
// error in SO_ERROR.
func TestSpliceFinishedKernel(t *testing.T) {
	for _, tc := range []struct {
		name     string
		fin      bool // the peer sends its FIN before the reset
		shutdown bool // probe with CloseWrite instead of Write
		wantErr  syscall.Errno
		want     bool
	}{
		{"write after FIN then reset", true, false, syscall.EPIPE, true},
		{"write after a bare reset", false, false, syscall.ECONNRESET, false},
		{"shutdown after FIN then reset", true, true, syscall.ENOTCONN, true},
		{"shutdown after a bare reset", false, true, syscall.ENOTCONN, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			local, peer := spliceTCPPair(t)
			if tc.fin {
				if err := peer.CloseWrite(); err != nil {
					t.Fatalf("peer CloseWrite: %v", err)
				}
				snitest.WaitFor(t, "the peer's FIN", func() bool { return tcpState(t, local) == unix.BPF_TCP_CLOSE_WAIT })
			}
			_ = peer.SetLinger(0)
			_ = peer.Close() // RST
			snitest.WaitFor(t, "the peer's reset", func() bool { return tcpState(t, local) == unix.BPF_TCP_CLOSE })
			var err error
			if tc.shutdown {
				err = local.CloseWrite()
			} else {
				_, err = local.Write([]byte("late"))
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("probe after the reset = %v, want %v", err, tc.wantErr)
			}
			if got := spliceFinished(local, err); got != tc.want {
				t.Fatalf("spliceFinished(%v) = %v, want %v", err, got, tc.want)
			}
		})
	}
}

// closeKindUpstream is a loopback upstream that runs serve on every
// accepted connection (after a TLS handshake when cfg is set), and waits
// for it at cleanup.
func closeKindUpstream(t *testing.T, cfg *tls.Config, serve func(raw *net.TCPConn, c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				var app net.Conn = c
				if cfg != nil {
					app = tls.Server(c, cfg)
				}
				defer app.Close() // TLS: close_notify, then FIN
				if tc, ok := app.(*tls.Conn); ok && tc.Handshake() != nil {
					return
				}
				serve(c.(*net.TCPConn), app)
			})
		}
	})
	return ln.Addr().String()
}

// closeKindEcho reads one 5-byte message and echoes it.
func closeKindEcho(c net.Conn) error {
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	_, err := c.Write(buf)
	return err
}

// closeKindEchoThenDrain echoes one message, then reads until the client
// ends (EOF, close_notify or an error).
func closeKindEchoThenDrain(_ *net.TCPConn, c net.Conn) {
	if closeKindEcho(c) == nil {
		_, _ = io.Copy(io.Discard, c)
	}
}

// closeKindDial opens a TLS connection through the proxy and exchanges one
// message, so the connection is spliced when it returns.
func closeKindDial(t *testing.T, addr string, cfg *tls.Config) (*net.TCPConn, *tls.Conn) {
	t.Helper()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial proxy: %v", err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	_ = raw.SetDeadline(time.Now().Add(30 * time.Second))
	c := tls.Client(raw, cfg)
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatalf("write through proxy: %v", err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("echo through proxy = %q, %v; want hello", buf, err)
	}
	return raw.(*net.TCPConn), c
}

// closeKindCAFile writes the CA's root as PEM for openssl.
func closeKindCAFile(t *testing.T, ca *snitest.CA) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestServerCloseKinds runs real proxied connections that end in each way
// the access log names, over loopback sockets with real TLS, and checks
// the close value. The normal ends (either side closing first, with TLS
// close_notify then FIN, or half-close) repeat, since the bug they guard
// against (close=error for them) depended on which packet came first.
func TestServerCloseKinds(t *testing.T) {
	snitest.CheckNoLeaks(t)
	ca := snitest.NewCA(t)
	const name = "ck.example.com"
	scfg := ca.ServerConfig(t, []string{name})
	ccfg := ca.ClientConfig(name)

	type row struct {
		name   string
		rounds int
		tcp    bool // plain TCP listener and upstream instead of TLS passthrough
		pol    ConnPolicy
		drain  time.Duration // > 0: the server is drained with this DrainTimeout
		close  bool          // the server is closed while the connection is open
		serve  func(raw *net.TCPConn, c net.Conn)
		client func(t *testing.T, addr string)
		want   string
	}
	openssl, opensslErr := exec.LookPath("openssl")
	rows := []row{
		{
			name: "tls client closes first", rounds: 10, want: closeEOF,
			serve: func(_ *net.TCPConn, c net.Conn) {
				if closeKindEcho(c) == nil {
					_, _ = io.Copy(io.Discard, c) // until the client's close_notify
				}
				// Close sends close_notify then FIN to a client that has
				// closed its socket: its kernel answers with a reset.
			},
			client: func(t *testing.T, addr string) {
				_, c := closeKindDial(t, addr, ccfg)
				_ = c.Close() // close_notify, FIN
			},
		},
		{
			name: "tls upstream closes first", rounds: 10, want: closeEOF,
			serve: func(_ *net.TCPConn, c net.Conn) { _ = closeKindEcho(c) },
			client: func(t *testing.T, addr string) {
				_, c := closeKindDial(t, addr, ccfg)
				if _, err := io.Copy(io.Discard, c); err != nil {
					t.Errorf("read to the upstream's close_notify: %v", err)
				}
				_ = c.Close() // its close_notify meets a closed upstream socket
			},
		},
		{
			name: "tls half-close", rounds: 5, want: closeEOF,
			serve: func(_ *net.TCPConn, c net.Conn) {
				if closeKindEcho(c) == nil {
					_, _ = io.Copy(io.Discard, c)
					_, _ = c.Write([]byte("bye"))
				}
			},
			client: func(t *testing.T, addr string) {
				_, c := closeKindDial(t, addr, ccfg)
				if err := c.CloseWrite(); err != nil {
					t.Fatalf("CloseWrite: %v", err)
				}
				if got, err := io.ReadAll(c); err != nil || string(got) != "bye" {
					t.Errorf("after CloseWrite read %q, %v; want bye", got, err)
				}
				_ = c.Close()
			},
		},
		{
			name: "tcp client closes first", rounds: 5, tcp: true, want: closeEOF,
			serve: func(_ *net.TCPConn, c net.Conn) {
				if closeKindEcho(c) == nil {
					_, _ = io.Copy(io.Discard, c)
					_, _ = c.Write([]byte("late")) // to a client gone: reset
				}
			},
			client: func(t *testing.T, addr string) {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				_, _ = c.Write([]byte("hello"))
				buf := make([]byte, 5)
				if _, err := io.ReadFull(c, buf); err != nil {
					t.Fatalf("echo: %v", err)
				}
				_ = c.Close()
			},
		},
		{
			name: "tcp upstream closes first", rounds: 5, tcp: true, want: closeEOF,
			serve: func(_ *net.TCPConn, c net.Conn) { _ = closeKindEcho(c) },
			client: func(t *testing.T, addr string) {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				defer c.Close()
				_, _ = c.Write([]byte("hello"))
				if got, err := io.ReadAll(c); err != nil || string(got) != "hello" {
					t.Fatalf("read to EOF = %q, %v; want hello", got, err)
				}
				_, _ = c.Write([]byte("late")) // to an upstream gone: reset
			},
		},
		{
			name: "client reset", rounds: 3, want: closeClientReset,
			serve: closeKindEchoThenDrain,
			client: func(t *testing.T, addr string) {
				raw, _ := closeKindDial(t, addr, ccfg)
				_ = raw.SetLinger(0)
				_ = raw.Close() // RST
			},
		},
		{
			name: "upstream reset", rounds: 3, want: closeUpstreamReset,
			serve: func(raw *net.TCPConn, c net.Conn) {
				if closeKindEcho(c) == nil {
					_ = raw.SetLinger(0) // the deferred Close resets
				}
			},
			client: func(t *testing.T, addr string) {
				_, c := closeKindDial(t, addr, ccfg)
				_, _ = io.Copy(io.Discard, c) // until the proxy closes it too
			},
		},
		{
			name: "idle timeout", rounds: 1, want: closeIdle, pol: ConnPolicy{IdleTimeout: 100 * time.Millisecond},
			serve: closeKindEchoThenDrain,
			client: func(t *testing.T, addr string) {
				_, c := closeKindDial(t, addr, ccfg)
				_, _ = io.Copy(io.Discard, c) // until the proxy closes
			},
		},
		{
			name: "max duration", rounds: 1, want: closeMaxDuration, pol: ConnPolicy{MaxConnectionDuration: 300 * time.Millisecond},
			serve: closeKindEchoThenDrain,
			client: func(t *testing.T, addr string) {
				_, c := closeKindDial(t, addr, ccfg)
				_, _ = io.Copy(io.Discard, c)
			},
		},
		{
			name: "drain", rounds: 1, want: closeDrain, drain: 50 * time.Millisecond,
			serve:  closeKindEchoThenDrain,
			client: func(t *testing.T, addr string) { closeKindDial(t, addr, ccfg) },
		},
		{
			name: "closed", rounds: 1, want: closeShutdown, close: true,
			serve:  closeKindEchoThenDrain,
			client: func(t *testing.T, addr string) { closeKindDial(t, addr, ccfg) },
		},
	}
	if opensslErr == nil {
		caFile := closeKindCAFile(t, ca)
		rows = append(rows, row{
			name: "openssl s_client", rounds: 3, want: closeEOF,
			serve: closeKindEchoThenDrain,
			client: func(t *testing.T, addr string) {
				ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
				defer cancel()
				cmd := exec.CommandContext(ctx, openssl, "s_client", "-connect", addr, "-servername", name,
					"-CAfile", caFile, "-verify_return_error", "-quiet", "-no_ign_eof")
				// s_client sends the line, reads the echo, and at the end of
				// its input sends close_notify and closes.
				stdin, err := cmd.StdinPipe()
				if err != nil {
					t.Fatal(err)
				}
				stdout, err := cmd.StdoutPipe()
				if err != nil {
					t.Fatal(err)
				}
				cmd.Stderr = io.Discard
				if err := cmd.Start(); err != nil {
					t.Fatalf("start openssl: %v", err)
				}
				_, _ = stdin.Write([]byte("hell\n"))
				// The context kills s_client if the echo never comes.
				got, err := bufio.NewReader(stdout).ReadString('\n')
				if got != "hell\n" {
					t.Errorf("openssl s_client echo = %q, %v; want hell", got, err)
				}
				_ = stdin.Close()
				_, _ = io.Copy(io.Discard, stdout)
				if err := cmd.Wait(); err != nil {
					t.Errorf("openssl s_client: %v", err)
				}
			},
		})
	} else {
		t.Logf("openssl not found (%v): no s_client row", opensslErr)
	}

	for _, tc := range rows {
		t.Run(tc.name, func(t *testing.T) {
			var cfg *tls.Config
			if !tc.tcp {
				cfg = scfg
			}
			up := closeKindUpstream(t, cfg, tc.serve)
			for i := range tc.rounds {
				h := newServerHarness(t, func(c *ServerConfig) { c.DrainTimeout = tc.drain })
				sni := name
				if tc.tcp {
					sni = ""
					h.apply(t, serverTCPTable(t, up))
				} else {
					h.apply(t, serverPassthroughTable(t, map[string][]string{name: {up}}, tc.pol))
				}
				tc.client(t, h.addr(t, ""))
				switch {
				case tc.drain > 0:
					if err := h.s.Shutdown(t.Context()); err != nil {
						t.Fatalf("Shutdown() = %v, want nil", err)
					}
				case tc.close:
					_ = h.s.Close()
				}
				line := h.log.waitLine(t, "the connection's access log line", func(m map[string]string) bool { return m["msg"] == "connection" })
				if line["close"] != tc.want || line["sni"] != sni {
					t.Fatalf("round %d: access log close=%q sni=%q, want close=%q sni=%q (line %v)", i, line["close"], line["sni"], tc.want, sni, line)
				}
				if tc.want == closeEOF && (line["bytes_rx"] == "0" || line["bytes_tx"] == "0") {
					t.Fatalf("round %d: bytes_rx=%s bytes_tx=%s, want bytes both ways", i, line["bytes_rx"], line["bytes_tx"])
				}
				_ = h.s.Close()
			}
		})
	}
}

// TestSpliceFinReceived: the other socket's state tells whether its peer
// has finished, even with bytes before the FIN still queued.
func TestSpliceFinReceived(t *testing.T) {
	local, peer := spliceTCPPair(t)
	if spliceFinReceived(local) {
		t.Fatal("spliceFinReceived on an open connection = true, want false")
	}
	if _, err := peer.Write([]byte("queued before the FIN")); err != nil {
		t.Fatal(err)
	}
	if err := peer.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	snitest.WaitFor(t, "the peer's FIN", func() bool { return tcpState(t, local) == unix.BPF_TCP_CLOSE_WAIT })
	if !spliceFinReceived(local) {
		t.Fatal("spliceFinReceived after the peer's FIN (bytes still queued) = false, want true")
	}
	u, _ := spliceUnixPair(t)
	if spliceFinReceived(u) {
		t.Fatal("spliceFinReceived on a unix socket = true, want false")
	}
}
