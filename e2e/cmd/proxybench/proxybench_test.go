package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

const statLine = "4242 (haproxy) S 1 4242 4242 0 -1 4194560 1061 0 0 0 25 17 0 0 20 0 2 0 2311 2125824 1024 18446744073709551615 1 1 0 0 0 0 0 4096 1 0 0 0 17 1 0 0 0 0 0\n"

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		name      string
		in        string
		wantPPID  int
		wantTicks uint64
		wantErr   error
	}{
		{"real haproxy line", statLine, 1, 42, nil},
		{"comm with spaces and parens", "77 (a (b) c)) R 5 77 77 0 -1 0 0 0 0 0 1000 1 0 0 20 0 1 0 1 1 1", 5, 1001, nil},
		{"comm with newline", "9 (x\ny) S 2 9 9 0 -1 0 0 0 0 0 3 4 0", 2, 7, nil},
		{"empty", "", 0, 0, errProcFormat},
		{"no command name", "1 haproxy S 1 1 1 0 -1 0 0 0 0 0 1 1", 0, 0, errProcFormat},
		{"truncated before stime", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 1", 0, 0, errProcFormat},
		{"only the paren", ")", 0, 0, errProcFormat},
		{"utime not a number", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 ab 1", 0, 0, errProcFormat},
		{"stime negative", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 1 -1", 0, 0, errProcFormat},
		{"ppid negative", "1 (x) S -4 1 1 0 -1 0 0 0 0 0 1 1", 0, 0, errProcFormat},
		{"utime+stime overflows", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 18446744073709551615 1", 0, 0, errProcFormat},
		{"utime beyond uint64", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 18446744073709551616 1", 0, 0, errProcFormat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ppid, ticks, err := parseStat([]byte(tc.in))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("parseStat(%q) error = %v, want %v", tc.in, err, tc.wantErr)
			}
			if ppid != tc.wantPPID || ticks != tc.wantTicks {
				t.Fatalf("parseStat(%q) = ppid %d, ticks %d; want ppid %d, ticks %d", tc.in, ppid, ticks, tc.wantPPID, tc.wantTicks)
			}
		})
	}
}

func FuzzParseStat(f *testing.F) {
	for _, s := range []string{statLine, "77 (a (b) c)) R 5 77 77 0 -1 0 0 0 0 0 1000 1 0 0", "", ")", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 18446744073709551615 1"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ppid, _, err := parseStat(b)
		if err == nil && (ppid < 0 || !bytes.Contains(b, []byte(")"))) {
			t.Fatalf("parseStat(%q) accepted ppid %d", b, ppid)
		}
		if err != nil && !errors.Is(err, errProcFormat) {
			t.Fatalf("parseStat(%q) error %v does not wrap errProcFormat", b, err)
		}
	})
}

const statusText = "Name:\thaproxy\nVmPeak:\t  100 kB\nVmRSS:\t    9876 kB\nRssAnon:\t 5000 kB\nThreads:\t2\n"
const rollupText = "55d0c0000000-7ffc00000000 ---p 00000000 00:00 0  [rollup]\nRss:               10240 kB\nPss:                8192 kB\nPss_Anon:           4000 kB\n"

func TestParseKiB(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in, key string
		want    uint64
		wantErr error
	}{
		{"status VmRSS", statusText, "VmRSS", 9876, nil},
		{"rollup Pss", rollupText, "Pss", 8192, nil},
		{"rollup Pss_Anon is not Pss", "Pss_Anon:  4000 kB\n", "Pss", 0, errProcFormat},
		{"no trailing newline", "Pss: 12 kB", "Pss", 12, nil},
		{"empty", "", "Pss", 0, errProcFormat},
		{"missing key", statusText, "Pss", 0, errProcFormat},
		{"wrong unit", "Pss: 12 MB\n", "Pss", 0, errProcFormat},
		{"no unit", "Pss: 12\n", "Pss", 0, errProcFormat},
		{"not a number", "Pss: twelve kB\n", "Pss", 0, errProcFormat},
		{"negative", "Pss: -12 kB\n", "Pss", 0, errProcFormat},
		{"beyond uint64", "Pss: 18446744073709551616 kB\n", "Pss", 0, errProcFormat},
		{"extra field", "Pss: 12 kB kB\n", "Pss", 0, errProcFormat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseKiB([]byte(tc.in), tc.key)
			if !errors.Is(err, tc.wantErr) || got != tc.want {
				t.Fatalf("parseKiB(%q, %q) = %d, %v; want %d, %v", tc.in, tc.key, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func FuzzParseKiB(f *testing.F) {
	for _, s := range []string{statusText, rollupText, "Pss: 12 kB", "Pss: 12 MB\n", "Pss_Anon:  4000 kB\n"} {
		f.Add([]byte(s), "Pss")
		f.Add([]byte(s), "VmRSS")
	}
	f.Fuzz(func(t *testing.T, b []byte, key string) {
		v, err := parseKiB(b, key)
		if err != nil {
			if !errors.Is(err, errProcFormat) {
				t.Fatalf("parseKiB(%q, %q) error %v does not wrap errProcFormat", b, key, err)
			}
			return
		}
		if !bytes.Contains(b, []byte(key+":")) || !bytes.Contains(b, []byte("kB")) {
			t.Fatalf("parseKiB(%q, %q) = %d from input without a %q line", b, key, v, key)
		}
	})
}

func TestSampleTree(t *testing.T) {
	child := exec.CommandContext(t.Context(), "sleep", "60")
	if err := child.Start(); err != nil {
		t.Skipf("cannot start sleep: %v", err)
	}
	t.Cleanup(func() { child.Process.Kill(); child.Wait() })

	pids, err := processTree(os.Getpid())
	if err != nil {
		t.Fatalf("processTree(self) error = %v", err)
	}
	if pids[0] != os.Getpid() || !slices.Contains(pids, child.Process.Pid) {
		t.Fatalf("processTree(self) = %v, want self %d first and child %d in it", pids, os.Getpid(), child.Process.Pid)
	}
	s, err := sampleTree(os.Getpid())
	if err != nil {
		t.Fatalf("sampleTree(self) error = %v", err)
	}
	if s.PIDs < 2 || s.RSSKiB == 0 || s.PssKiB == 0 || s.FDs < 3 {
		t.Fatalf("sampleTree(self) = %+v, want >= 2 pids, RSS, Pss and >= 3 fds", s)
	}
	if _, err := sampleTree(1 << 30); err == nil {
		t.Fatalf("sampleTree(no such pid) error = nil, want one")
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		modify func(*config)
		ok     bool
	}{
		{"default", func(*config) {}, true},
		{"short", func(c *config) { *c = shortConfig() }, true},
		{"zero duration", func(c *config) { c.Duration = 0 }, false},
		{"rounds too short", func(c *config) { c.Duration = time.Second; c.Rounds = 20 }, false},
		{"zero rounds", func(c *config) { c.Rounds = 0 }, false},
		{"no concurrency", func(c *config) { c.Concurrency = nil }, false},
		{"concurrency zero", func(c *config) { c.Concurrency = []int{0, 16} }, false},
		{"concurrency huge", func(c *config) { c.Concurrency = []int{16, 1 << 20} }, false},
		{"detail not measured", func(c *config) { c.DetailAt = 32 }, false},
		{"no streams", func(c *config) { c.Streams = nil }, false},
		{"negative streams", func(c *config) { c.Streams = []int{-1} }, false},
		{"no idle conns", func(c *config) { c.IdleConns = 0 }, false},
		{"no idle conns but idle skipped", func(c *config) { c.IdleConns = 0; c.SkipIdle = true }, true},
		{"no peers", func(c *config) { c.Peers = nil }, false},
		{"unknown peer", func(c *config) { c.Peers = []string{"envoy"} }, false},
		{"peer twice", func(c *config) { c.Peers = []string{"direct", "direct"} }, false},
		{"zero workers", func(c *config) { c.Workers = 0 }, false},
		{"zero byte bound", func(c *config) { c.MaxBytesPerCell = 0 }, false},
		{"zero conn bound", func(c *config) { c.MaxConnsPerCell = 0 }, false},
		{"zero idle timeout", func(c *config) { c.IdleOpenTimeout = 0 }, false},
		{"zero timeout", func(c *config) { c.Timeout = 0 }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := defaultConfig()
			tc.modify(&c)
			err := c.validate()
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, errConfig)) {
				t.Fatalf("validate() of %s config = %v, want ok=%v (errors wrap errConfig)", tc.name, err, tc.ok)
			}
		})
	}
}

func TestParseFlags(t *testing.T) {
	env := func(k string) string {
		if k == "MESHGATE_BIN" {
			return "/opt/meshgate"
		}
		return ""
	}
	for _, tc := range []struct {
		name    string
		args    []string
		check   func(config) bool
		wantErr error
	}{
		{"defaults", nil, func(c config) bool {
			return c.Duration == 5*time.Second && c.IdleConns == 9000 && c.Rounds == 5 && c.MeshgateBin == "/opt/meshgate" && slices.Equal(c.Peers, allPeers)
		}, nil},
		{"short", []string{"-short"}, func(c config) bool {
			return c.Duration == time.Second && c.IdleConns == 500 && c.Rounds == 1
		}, nil},
		{"short with explicit duration", []string{"-short", "-duration", "2s", "-conns", "100"}, func(c config) bool {
			return c.Duration == 2*time.Second && c.IdleConns == 100 && c.Rounds == 1
		}, nil},
		{"only and json", []string{"-only", "direct, haproxy", "-json", "out.json", "-skip-idle"}, func(c config) bool {
			return slices.Equal(c.Peers, []string{"direct", "haproxy"}) && c.JSONFile == "out.json" && c.SkipIdle
		}, nil},
		{"meshgate flag wins over env", []string{"-meshgate", "/x"}, func(c config) bool { return c.MeshgateBin == "/x" }, nil},
		{"unknown peer", []string{"-only", "direct,envoy"}, nil, errConfig},
		{"empty only", []string{"-only", ","}, nil, errConfig},
		{"stray argument", []string{"now"}, nil, errConfig},
		{"help", []string{"-h"}, nil, flag.ErrHelp},
		{"bad duration", []string{"-duration", "soon"}, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseFlags(tc.args, env, io.Discard)
			if tc.check == nil {
				if err == nil || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) {
					t.Fatalf("parseFlags(%q) error = %v, want %v", tc.args, err, cmp(tc.wantErr))
				}
				return
			}
			if err != nil || !tc.check(c) {
				t.Fatalf("parseFlags(%q) = %+v, %v; want a config that passes the %q check", tc.args, c, err, tc.name)
			}
		})
	}
}

// cmp names the wanted error for messages; nil means "any error".
func cmp(err error) string {
	if err == nil {
		return "an error"
	}
	return err.Error()
}

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	for _, tc := range []struct {
		name string
		in   []time.Duration
		q    float64
		want time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one", ms(7), 0.99, 7 * time.Millisecond},
		{"median of three", ms(1, 2, 3), 0.5, 2 * time.Millisecond},
		{"p99 of 1..100", ms(hundred...), 0.99, 99 * time.Millisecond},
		{"q above 1 clamps", ms(1, 2), 1.5, 2 * time.Millisecond},
		{"q below 0 clamps", ms(1, 2), -1, time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := percentile(tc.in, tc.q); got != tc.want {
				t.Fatalf("percentile(%v, %v) = %v, want %v", tc.in, tc.q, got, tc.want)
			}
		})
	}
}

func TestTailBuffer(t *testing.T) {
	tb := &tailBuffer{max: 8}
	fmt.Fprint(tb, "0123456789")
	fmt.Fprint(tb, "ab")
	if got := tb.String(); got != "456789ab" {
		t.Fatalf("tailBuffer after writing 12 bytes with max 8 = %q, want %q", got, "456789ab")
	}
}

// fixedResults is a run with every kind of cell, for the report tests.
func fixedResults() *results {
	f := func(v float64) *float64 { return &v }
	r := &results{
		Started:  time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC),
		Host:     hostInfo{Cores: 2, Kernel: "linux 6.1", GoVersion: "go1.26.8", NoFile: 20000, LoadStart: "0.10 0.20 0.30", LoadEnd: "1.00 0.50 0.40"},
		Settings: settings{CellSeconds: 5, Rounds: 5, Workers: 2, DetailAt: 16, IdleConns: 9000},
		Peers: []peerInfo{
			{Name: "direct", Setup: peerSetup(peerDirect, 2)}, {Name: "meshgate", Version: "meshgate v0.1.0", Setup: peerSetup(peerMeshgate, 2)},
			{Name: "haproxy", Version: "HAProxy version 2.6.12", Setup: peerSetup(peerHAProxy, 2)},
			{Name: "nginx", Skipped: "proxybench: peer unavailable: nginx has no stream module\nsecond line"},
		},
		Notes: []string{"9000 idle connections asked, 8000 used"},
		Handshakes: []handshakeCell{
			{Peer: "direct", Concurrency: 1, Conns: 5000, Seconds: 5, ConnsPerSec: 1000, P50Ms: 0.9, P99Ms: 1.5},
			{Peer: "meshgate", Concurrency: 1, Conns: 4800, Seconds: 5, ConnsPerSec: 960, P50Ms: 1, P99Ms: 1.6, ProxyCPUSeconds: f(1), CPUMsPer1000: f(208.3)},
			{Peer: "haproxy", Concurrency: 1, Conns: 4500, Seconds: 5, ConnsPerSec: 900, P50Ms: 1.1, P99Ms: 2, ProxyCPUSeconds: f(1.2), CPUMsPer1000: f(266.7)},
			{Peer: "direct", Concurrency: 16, Conns: 7500, Seconds: 5, ConnsPerSec: 1500, P50Ms: 10, P99Ms: 20},
			{Peer: "meshgate", Concurrency: 16, Conns: 6000, Errors: 2, FirstError: "proxybench: dial: refused\nmore", Seconds: 5, ConnsPerSec: 1200, P50Ms: 12, P99Ms: 24, ProxyCPUSeconds: f(1.5), CPUMsPer1000: f(250)},
			{Peer: "haproxy", Concurrency: 16, Conns: 5000, Seconds: 5, ConnsPerSec: 1000, P50Ms: 15, P99Ms: 30, ProxyCPUSeconds: f(1.5), CPUMsPer1000: f(300)},
		},
		Throughput: []throughputCell{
			{Peer: "direct", Streams: 1, Bytes: 20e9, Seconds: 5, MBPerSec: 4000},
			{Peer: "meshgate", Streams: 1, Bytes: 10e9, Seconds: 5, MBPerSec: 2000},
			{Peer: "haproxy", Streams: 1, Bytes: 5e9, Seconds: 5, MBPerSec: 1000},
		},
		Idle: []idleCell{
			{Peer: "meshgate", Requested: 8000, Opened: 8000, PssKiBPerConn: 2.5, RSSKiBPerConn: 2.6, FDsPerConn: 2},
			{Peer: "haproxy", Requested: 8000, Opened: 7990, Errors: 10, FirstError: "proxybench: TLS handshake: EOF", PssKiBPerConn: 3.3, RSSKiBPerConn: 3.3, FDsPerConn: 2},
		},
	}
	fillRatios(r)
	fillGoals(r)
	return r
}

func TestFillRatios(t *testing.T) {
	r := fixedResults()
	for _, tc := range []struct {
		name string
		got  *float64
		want float64 // 0: absent
	}{
		{"meshgate c=1 vs direct", r.Handshakes[1].ConnsVsDirect, 0.96},
		{"meshgate c=1 vs haproxy", r.Handshakes[1].ConnsVsHAProxy, 960.0 / 900},
		{"direct has no ratio to itself", r.Handshakes[0].ConnsVsDirect, 0},
		{"haproxy has no ratio to itself", r.Handshakes[2].ConnsVsHAProxy, 0},
		{"meshgate p99 c=16 vs haproxy", r.Handshakes[4].P99VsHAProxy, 0.8},
		{"meshgate CPU vs haproxy", r.Handshakes[4].CPUVsHAProxy, 250.0 / 300},
		{"direct CPU vs haproxy absent", r.Handshakes[3].CPUVsHAProxy, 0},
		{"meshgate throughput vs direct", r.Throughput[1].VsDirect, 0.5},
		{"meshgate throughput vs haproxy", r.Throughput[1].VsHAProxy, 2},
		{"meshgate idle Pss vs haproxy", r.Idle[0].PssVsHAProxy, 2.5 / 3.3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			switch {
			case tc.want == 0 && tc.got != nil:
				t.Fatalf("fillRatios set %s = %v, want it absent", tc.name, *tc.got)
			case tc.want != 0 && (tc.got == nil || *tc.got < tc.want-1e-9 || *tc.got > tc.want+1e-9):
				t.Fatalf("fillRatios set %s = %s, want %.4f", tc.name, fmtRatio(tc.got), tc.want)
			}
		})
	}
	if got := ratio(1, 0); got != nil {
		t.Fatalf("ratio(1, 0) = %v, want nil", *got)
	}
}

func TestReportGolden(t *testing.T) {
	var b bytes.Buffer
	if err := writeReport(&b, fixedResults()); err != nil {
		t.Fatalf("writeReport() error = %v", err)
	}
	golden := filepath.Join("testdata", "report.golden")
	if *update {
		if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("read %s (run with -update to create it): %v", golden, err)
	}
	if !bytes.Equal(b.Bytes(), want) {
		t.Fatalf("writeReport() output differs from %s (run with -update after checking):\n%s", golden, b.String())
	}
	out := filepath.Join(t.TempDir(), "r.json")
	if err := writeJSON(out, fixedResults()); err != nil {
		t.Fatalf("writeJSON() error = %v", err)
	}
	js, _ := os.ReadFile(out)
	for _, key := range []string{`"conns_per_sec": 960`, `"proxy_cpu_ms_per_1000_conns": 250`, `"pss_kib_per_conn": 2.5`, `"vs_haproxy": 2`} {
		if !bytes.Contains(js, []byte(key)) {
			t.Fatalf("writeJSON() output lacks %s:\n%s", key, js)
		}
	}
}

func TestClientHelloCapture(t *testing.T) {
	p, err := newPKI(tlsName)
	if err != nil {
		t.Fatal(err)
	}
	hello, err := clientHello(p.clientConfig(rawName))
	if err != nil {
		t.Fatalf("clientHello() error = %v", err)
	}
	if len(hello) < 200 || hello[0] != recordHandshake || int(binary.BigEndian.Uint16(hello[3:]))+5 != len(hello) || hello[5] != 1 {
		t.Fatalf("clientHello() = %d bytes starting % x, want one handshake record holding a ClientHello", len(hello), hello[:min(6, len(hello))])
	}
	if !bytes.Contains(hello, []byte(rawName)) {
		t.Fatalf("clientHello() does not carry SNI %q", rawName)
	}
}

func TestSink(t *testing.T) {
	p, err := newPKI(tlsName)
	if err != nil {
		t.Fatal(err)
	}
	hello, err := clientHello(p.clientConfig(rawName))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := listenServer(serveSink(10 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	for _, tc := range []struct {
		name    string
		prefix  []byte
		body    int
		wantAck bool
	}{
		{"hello then bytes", hello, 3 << 20, true},
		{"hello then nothing", hello, 0, true},
		{"plain HTTP is refused", []byte("GET / HTTP/1.1\r\n\r\n"), 10, false},
		{"truncated hello", hello[:20], 0, false},
		{"empty", nil, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", srv.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			c.Write(tc.prefix)
			c.Write(make([]byte, tc.body))
			c.(*net.TCPConn).CloseWrite()
			var ack [8]byte
			_, err = io.ReadFull(c, ack[:])
			if !tc.wantAck {
				if err == nil {
					t.Fatalf("sink answered %d to %q, want the connection closed without an answer", binary.BigEndian.Uint64(ack[:]), tc.name)
				}
				return
			}
			if err != nil || binary.BigEndian.Uint64(ack[:]) != uint64(tc.body) {
				t.Fatalf("sink count after %d bytes = %d, %v; want %d", tc.body, binary.BigEndian.Uint64(ack[:]), err, tc.body)
			}
		})
	}
	if err := quiesce(t.Context(), srv); err != nil {
		t.Fatalf("sink still holds connections after the clients closed: %v", err)
	}
}

// checkFigures fails t for every cell of r that lacks a positive figure.
func checkFigures(t *testing.T, r *results, cfg config) {
	t.Helper()
	want := 0
	for _, p := range r.Peers {
		if p.Skipped != "" {
			t.Errorf("peer %s skipped: %s", p.Name, p.Skipped)
			continue
		}
		want++
	}
	if got := len(r.Handshakes); got != want*len(cfg.Concurrency) {
		t.Errorf("run() gave %d handshake cells, want %d", got, want*len(cfg.Concurrency))
	}
	for _, c := range r.Handshakes {
		if c.Conns <= 0 || c.ConnsPerSec <= 0 || c.P50Ms <= 0 || c.P99Ms < c.P50Ms {
			t.Errorf("handshakes %s c=%d: %d conns, %.1f conn/s, p50 %.3f ms, p99 %.3f ms, errors %d (%s); want positive figures",
				c.Peer, c.Concurrency, c.Conns, c.ConnsPerSec, c.P50Ms, c.P99Ms, c.Errors, c.FirstError)
		}
		if c.Peer != peerDirect && (c.CPUMsPer1000 == nil || *c.CPUMsPer1000 <= 0) {
			t.Errorf("handshakes %s c=%d: proxy CPU per 1000 conns = %s (%s), want a positive figure", c.Peer, c.Concurrency, fmtOpt("%.1f", c.CPUMsPer1000), c.FirstError)
		}
	}
	if got := len(r.Throughput); got != want*len(cfg.Streams) {
		t.Errorf("run() gave %d throughput cells, want %d", got, want*len(cfg.Streams))
	}
	for _, c := range r.Throughput {
		if c.Bytes <= 0 || c.MBPerSec <= 0 || c.Errors != 0 {
			t.Errorf("throughput %s streams=%d: %d bytes, %.1f MB/s, %d errors (%s); want positive figures and no error", c.Peer, c.Streams, c.Bytes, c.MBPerSec, c.Errors, c.FirstError)
		}
	}
	for _, c := range r.Idle {
		if c.Opened != c.Requested || c.PssKiBPerConn <= 0 || c.RSSKiBPerConn <= 0 || c.FDsPerConn <= 0 || c.FirstError != "" {
			t.Errorf("idle %s: opened %d/%d, Pss %.2f KiB, RSS %.2f KiB, %.2f fds per conn (%s); want all opened and positive figures",
				c.Peer, c.Opened, c.Requested, c.PssKiBPerConn, c.RSSKiBPerConn, c.FDsPerConn, c.FirstError)
		}
	}
	if t.Failed() {
		var b bytes.Buffer
		writeReport(&b, r)
		t.Logf("report:\n%s", b.String())
	}
}

// TestHarnessDirect runs the harness against the backends alone with short
// cells, so that it is exercised even where no meshgate binary is given.
func TestHarnessDirect(t *testing.T) {
	cfg := shortConfig()
	cfg.Peers = []string{peerDirect}
	cfg.SkipIdle = true
	cfg.Install = false
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	r, err := run(t.Context(), cfg)
	if err != nil {
		t.Fatalf("run(direct, short) error = %v", err)
	}
	checkFigures(t, r, cfg)
}

// TestHarnessMeshgate is the -short run against direct and meshgate: every
// cell of every figure must come out positive.
func TestHarnessMeshgate(t *testing.T) {
	bin := os.Getenv("MESHGATE_BIN")
	if bin == "" {
		t.Skip("MESHGATE_BIN not set")
	}
	cfg := shortConfig()
	cfg.Peers = []string{peerDirect, peerMeshgate}
	cfg.MeshgateBin = bin
	cfg.Install = false
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	r, err := run(t.Context(), cfg)
	if err != nil {
		t.Fatalf("run(direct+meshgate, short) error = %v", err)
	}
	if len(r.Idle) != 1 {
		t.Errorf("run() gave %d idle cells, want 1 (meshgate)", len(r.Idle))
	}
	checkFigures(t, r, cfg)
}

// TestProxyPeers starts HAProxy and nginx when installed, routes one TLS
// exchange and one raw stream through each, and checks that Close leaves no
// process behind.
func TestProxyPeers(t *testing.T) {
	p, err := newPKI(tlsName)
	if err != nil {
		t.Fatal(err)
	}
	tlsSrv, err := listenServer(serveTLS(p.serverConfig()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tlsSrv.Close() })
	rawSrv, err := listenServer(serveSink(10 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rawSrv.Close() })
	hello, err := clientHello(p.clientConfig(rawName))
	if err != nil {
		t.Fatal(err)
	}
	clientCfg := p.clientConfig(tlsName)
	for _, name := range []string{peerHAProxy, peerNginx} {
		t.Run(name, func(t *testing.T) {
			if findBin(name) == "" {
				t.Skipf("%s not installed", name)
			}
			env := peerEnv{
				dir: t.TempDir(), tlsBackend: tlsSrv.Addr(), rawBackend: rawSrv.Addr(), workers: 2,
				maxConns: 100, nofile: 4096, install: false, log: slog.New(slog.NewTextHandler(t.Output(), nil)),
				probe: func(ctx context.Context, addr string) error {
					c, _, err := exchange(ctx, addr, clientCfg)
					if err == nil {
						c.Close()
					}
					return err
				},
			}
			pr, err := startPeer(t.Context(), name, env)
			if errors.Is(err, errUnavailable) {
				t.Skipf("%s unavailable: %v", name, err)
			}
			if err != nil {
				t.Fatalf("startPeer(%s) error = %v", name, err)
			}
			t.Cleanup(func() { pr.Close() })
			if !strings.Contains(strings.ToLower(pr.Version()), name) {
				t.Errorf("%s Version() = %q, want it to name %s", name, pr.Version(), name)
			}
			run := runThroughput(t.Context(), pr.RawAddr(), hello, 2, 100*time.Millisecond, 1<<20)
			if run.Errors != 0 || run.Bytes <= 0 {
				t.Errorf("runThroughput via %s = %d bytes, %d errors (%v); want bytes and no error", name, run.Bytes, run.Errors, run.FirstErr)
			}
			pids, err := processTree(pr.PID())
			if err != nil {
				t.Fatal(err)
			}
			if err := pr.Close(); err != nil {
				t.Fatalf("%s Close() error = %v", name, err)
			}
			for _, pid := range pids {
				if err := syscall.Kill(pid, 0); err == nil {
					if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); !bytes.Contains(b, []byte(") Z ")) {
						t.Errorf("%s process %d still runs after Close (tree %v)", name, pid, pids)
					}
				}
			}
		})
	}
}

func TestFillGoals(t *testing.T) {
	verdicts := func(r *results) string {
		var v []string
		for _, g := range r.Goals {
			switch {
			case g.Met == nil:
				v = append(v, "n/a")
			case *g.Met:
				v = append(v, "met")
			default:
				v = append(v, "missed")
			}
		}
		return strings.Join(v, ",")
	}
	for _, tc := range []struct {
		name   string
		modify func(*results)
		want   string
	}{
		{"fixed run", func(*results) {}, "met,met,met,missed,met"},
		{"meshgate skipped", func(r *results) { r.Peers[1].Skipped = "no binary" }, ""},
		{"slow handshakes", func(r *results) { r.Handshakes[1].ConnsPerSec = 900 }, "missed,met,met,missed,met"},
		{"idle uses 3 fds", func(r *results) { r.Idle[0].FDsPerConn = 3 }, "met,met,met,missed,missed"},
		{"throughput beats all", func(r *results) { r.Throughput[1].MBPerSec = 3600 }, "met,met,met,met,met"},
		{"no other proxy", func(r *results) {
			r.Handshakes = slices.DeleteFunc(r.Handshakes, func(c handshakeCell) bool { return c.Peer == peerHAProxy })
		}, "met,n/a,n/a,missed,met"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := fixedResults()
			tc.modify(r)
			fillRatios(r)
			fillGoals(r)
			if got := verdicts(r); got != tc.want {
				t.Fatalf("fillGoals(%s) verdicts = %q, want %q (%+v)", tc.name, got, tc.want, r.Goals)
			}
		})
	}
}

func TestBusy(t *testing.T) {
	for _, tc := range []struct {
		name  string
		load  string
		cores int
		want  bool
	}{
		{"idle", "0.10 0.20 0.30", 2, false},
		{"exactly the cores", "2.00 1.00 1.00", 2, false},
		{"overloaded", "13.38 11.37 6.66", 2, true},
		{"unreadable", "?", 2, false},
		{"empty", "", 2, false},
		{"negative", "-5 0 0", 2, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := busy(tc.load, tc.cores); got != tc.want {
				t.Fatalf("busy(%q, %d) = %v, want %v", tc.load, tc.cores, got, tc.want)
			}
		})
	}
}
