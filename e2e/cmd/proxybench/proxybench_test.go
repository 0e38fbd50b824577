package main

import (
	"bytes"
	"context"
	"crypto/tls"
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
	"runtime"
	"slices"
	"strconv"
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
		{"sample too short", func(c *config) { c.Duration = 50 * time.Millisecond }, false},
		{"zero runs", func(c *config) { c.Runs = 0 }, false},
		{"too many runs", func(c *config) { c.Runs = 101 }, false},
		{"no modes", func(c *config) { c.Modes = nil }, false},
		{"unknown mode", func(c *config) { c.Modes = []string{"pinned", "numa"} }, false},
		{"mode twice", func(c *config) { c.Modes = []string{"unpinned", "unpinned"} }, false},
		{"only unpinned", func(c *config) { c.Modes = []string{"unpinned"} }, true},
		{"proxy CPU beyond range", func(c *config) { c.ProxyCPU = maxCPU + 1 }, false},
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
			return c.Duration == 2*time.Second && c.IdleConns == 9500 && c.Runs == 3 && c.MeshgateBin == "/opt/meshgate" &&
				slices.Equal(c.Peers, allPeers) && slices.Equal(c.Modes, allModes) && c.ProxyCPU == -1 && c.DetailAt == 64
		}, nil},
		{"short", []string{"-short"}, func(c config) bool {
			return c.Duration == 300*time.Millisecond && c.IdleConns == 200 && c.Runs == 1
		}, nil},
		{"short with explicit duration", []string{"-short", "-duration", "2s", "-conns", "100", "-runs", "2"}, func(c config) bool {
			return c.Duration == 2*time.Second && c.IdleConns == 100 && c.Runs == 2
		}, nil},
		{"one mode and a proxy CPU", []string{"-modes", " pinned ", "-proxy-cpu", "0"}, func(c config) bool {
			return slices.Equal(c.Modes, []string{modePinned}) && c.ProxyCPU == 0
		}, nil},
		{"unknown mode", []string{"-modes", "pinned,turbo"}, nil, errConfig},
		{"empty modes", []string{"-modes", ""}, nil, errConfig},
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
					t.Fatalf("parseFlags(%q) error = %v, want %v", tc.args, err, wantText(tc.wantErr))
				}
				return
			}
			if err != nil || !tc.check(c) {
				t.Fatalf("parseFlags(%q) = %+v, %v; want a config that passes the %q check", tc.args, c, err, tc.name)
			}
		})
	}
}

// wantText names the wanted error for messages; nil means "any error".
func wantText(err error) string {
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

// fixedResults is a two-mode run with every kind of cell, for the report
// tests: pinned has three runs, unpinned one.
func fixedResults() *results {
	f := func(v float64) *float64 { return &v }
	hs := func(run int, conns int64, cps, p50, p99 float64, cpu *float64) handshakeSample {
		return handshakeSample{Run: run, Conns: conns, Seconds: float64(conns) / cps, ConnsPerSec: cps, P50Ms: p50, P99Ms: p99, ProxyCPUSeconds: cpu}
	}
	tp := func(run int, mbps float64) throughputSample {
		return throughputSample{Run: run, Bytes: int64(mbps * 2e6), Seconds: 2, MBPerSec: mbps}
	}
	idle := func(run int, rss2, peak, pss, rss float64) idleSample {
		return idleSample{Run: run, Requested: 9500, Opened: 9500, After: procSample{PIDs: 1},
			RSS2sKiBPerConn: rss2, PeakRSSKiBPerConn: peak, PssKiBPerConn: pss, RSSKiBPerConn: rss, FDsPerConn: 2,
			RefillOpened: 9500, Refill: procSample{PIDs: 1}, RefillRSS2sKiBPerConn: 0.8 * rss2, RefillPeakRSSKiBPerConn: 0.8 * peak}
	}
	pinned := modeResult{
		Mode:  modePinned,
		Setup: "each proxy on CPU 1 (taskset -c) with 1 worker; load generator and backends on CPU 0",
		Peers: []peerInfo{
			{Name: "direct", Setup: peerSetup(peerDirect, 1)},
			{Name: "meshgate", Setup: peerSetup(peerMeshgate, 1) + "; runs on CPUs 1"},
			{Name: "haproxy", Setup: peerSetup(peerHAProxy, 1) + "; runs on CPUs 1"},
			{Name: "nginx", Skipped: "proxybench: peer unavailable: nginx has no stream module\nsecond line"},
		},
		Handshakes: []handshakeCell{
			{Peer: "direct", Concurrency: 1, Runs: []handshakeSample{hs(0, 2000, 1000, 0.9, 1.5, nil), hs(1, 2200, 1100, 0.8, 1.4, nil), hs(2, 1800, 900, 1, 1.6, nil)}},
			{Peer: "meshgate", Concurrency: 1, Runs: []handshakeSample{hs(0, 1500, 750, 1.2, 2, f(0.5)), hs(1, 1700, 850, 1.1, 1.9, f(0.6)), hs(2, 1400, 700, 1.3, 2.1, f(0.5))}},
			{Peer: "haproxy", Concurrency: 1, Runs: []handshakeSample{hs(0, 1400, 700, 1.3, 2.2, f(0.3)), hs(1, 1600, 800, 1.2, 2, f(0.3)), hs(2, 1300, 650, 1.4, 2.4, f(0.3))}},
			{Peer: "direct", Concurrency: 64, Runs: []handshakeSample{hs(0, 4000, 2000, 30, 50, nil), hs(1, 4200, 2100, 29, 48, nil), hs(2, 3800, 1900, 31, 52, nil)}},
			{Peer: "meshgate", Concurrency: 64, Runs: []handshakeSample{
				hs(0, 3600, 1800, 33, 55, f(0.94)), hs(1, 3800, 1900, 32, 53, f(0.9)),
				{Run: 2, Conns: 3400, Errors: 2, FirstError: "proxybench: dial: refused\nmore", Seconds: 2, ConnsPerSec: 1700, P50Ms: 35, P99Ms: 60, ProxyCPUSeconds: f(0.96)},
			}},
			{Peer: "haproxy", Concurrency: 64, Runs: []handshakeSample{hs(0, 3600, 1800, 34, 56, f(0.62)), hs(1, 3700, 1850, 33, 54, f(0.6)), hs(2, 3500, 1750, 35, 58, f(0.64))}},
		},
		Download: []throughputCell{
			{Peer: "direct", Streams: 8, Runs: []throughputSample{tp(0, 1000), tp(1, 1100), tp(2, 900)}},
			{Peer: "meshgate", Streams: 8, Runs: []throughputSample{tp(0, 760), tp(1, 850), tp(2, 700)}},
			{Peer: "haproxy", Streams: 8, Runs: []throughputSample{tp(0, 910), tp(1, 1000), tp(2, 800), {Run: 3, Errors: 1, FirstError: "proxybench: download via x: reset"}}},
		},
		Raw: []throughputCell{
			{Peer: "direct", Streams: 8, Runs: []throughputSample{tp(0, 4000), tp(1, 4400), tp(2, 3600)}},
			{Peer: "meshgate", Streams: 8, Runs: []throughputSample{tp(0, 2680), tp(1, 3000), tp(2, 2500)}},
			{Peer: "haproxy", Streams: 8, Runs: []throughputSample{tp(0, 1280), tp(1, 1400), tp(2, 1200)}},
		},
		Idle: []idleCell{
			{Peer: "meshgate", Runs: []idleSample{idle(0, 9.76, 10.2, 4.6, 5), idle(1, 9.5, 10, 4.5, 4.9), idle(2, 10, 11, 4.7, 5.1)}},
			{Peer: "haproxy", Runs: []idleSample{idle(0, 3.24, 3.3, 3.1, 3.2), idle(1, 3.2, 3.3, 3.1, 3.2),
				{Run: 2, Requested: 9500, Opened: 9400, Errors: 100, FirstError: "proxybench: TLS handshake: EOF", After: procSample{PIDs: 1},
					RSS2sKiBPerConn: 3.3, PeakRSSKiBPerConn: 3.4, PssKiBPerConn: 3.2, RSSKiBPerConn: 3.3, FDsPerConn: 2}}},
		},
	}
	unpinned := modeResult{
		Mode:  modeUnpinned,
		Setup: "no CPU affinity; proxies get 2 workers",
		Peers: []peerInfo{
			{Name: "direct", Setup: peerSetup(peerDirect, 2)},
			{Name: "meshgate", Setup: peerSetup(peerMeshgate, 2) + "; runs on CPUs 0,1"},
			{Name: "haproxy", Setup: peerSetup(peerHAProxy, 2) + "; runs on CPUs 0,1"},
			{Name: "nginx", Skipped: "proxybench: peer unavailable: nginx has no stream module"},
		},
		Handshakes: []handshakeCell{
			{Peer: "direct", Concurrency: 1, Runs: []handshakeSample{hs(0, 2000, 1000, 0.9, 1.5, nil)}},
			{Peer: "meshgate", Concurrency: 1, Runs: []handshakeSample{hs(0, 1360, 680, 1.3, 2.2, f(0.6))}},
		},
	}
	r := &results{
		Started:  time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC),
		Host:     hostInfo{Cores: 2, Kernel: "linux 6.1", GoVersion: "go1.26.8", NoFile: 20000, LoadStart: "0.10 0.20 0.30", LoadEnd: "1.00 0.50 0.40"},
		Settings: settings{SampleSeconds: 2, Runs: 3, Workers: 2, DetailAt: 64, IdleConns: 9500},
		Peers: []peerInfo{
			{Name: "direct", Setup: peerSetup(peerDirect, 2)}, {Name: "meshgate", Version: "meshgate v0.1.0"},
			{Name: "haproxy", Version: "HAProxy version 2.6.12"},
			{Name: "nginx", Skipped: "proxybench: peer unavailable: nginx has no stream module\nsecond line"},
		},
		Modes: []modeResult{pinned, unpinned},
		Notes: []string{"9500 idle connections asked, 9000 used"},
	}
	for i := range r.Modes {
		r.Modes[i].finish()
	}
	fillGoals(r)
	return r
}

func TestSummarize(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []float64
		want *stat
	}{
		{"empty", nil, nil},
		{"one", []float64{7}, &stat{7, 7, 7, 1}},
		{"odd count, unsorted", []float64{3, 1, 2}, &stat{2, 1, 3, 3}},
		{"even count takes the mean of the middle two", []float64{4, 1, 3, 2}, &stat{2.5, 1, 4, 4}},
		{"negative growth", []float64{-1, 0.5}, &stat{-0.25, -1, 0.5, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Clone(tc.in)
			got := summarize(tc.in)
			if (got == nil) != (tc.want == nil) || (got != nil && *got != *tc.want) {
				t.Fatalf("summarize(%v) = %+v, want %+v", tc.in, got, tc.want)
			}
			if !slices.Equal(in, tc.in) {
				t.Fatalf("summarize(%v) reordered its input to %v", in, tc.in)
			}
		})
	}
	for _, tc := range []struct {
		s    *stat
		want string
	}{
		{nil, "-"},
		{&stat{0.74, 0.7, 0.78, 3}, "0.74 [0.70..0.78]"},
		{&stat{0.74, 0.74, 0.74, 3}, "0.74"},
		{&stat{0.74, 0.7, 0.78, 1}, "0.74"},
	} {
		if got := tc.s.format("%.2f"); got != tc.want {
			t.Errorf("%+v.format(%%.2f) = %q, want %q", tc.s, got, tc.want)
		}
	}
	got := pairedRatios(map[int]float64{0: 2, 1: 3, 2: 0, 4: 9}, map[int]float64{0: 4, 1: 3, 2: 5, 3: 1})
	if !slices.Equal(got, []float64{0.5, 1}) {
		t.Fatalf("pairedRatios = %v, want [0.5 1] (runs in both with positive figures only)", got)
	}
}

func TestFinish(t *testing.T) {
	r := fixedResults()
	p := r.mode(modePinned)
	within := func(s *stat, med, lo, hi float64) bool {
		near := func(a, b float64) bool { return a > b-1e-9 && a < b+1e-9 }
		return s != nil && near(s.Median, med) && near(s.Min, lo) && near(s.Max, hi)
	}
	for _, tc := range []struct {
		name          string
		got           *stat
		med, min, max float64 // all 0: absent
	}{
		{"meshgate c=1 conn/s", p.hsCell(peerMeshgate, 1).ConnsPerSec, 750, 700, 850},
		{"meshgate c=1 vs direct, run by run", p.hsCell(peerMeshgate, 1).ConnsVsDirect, 850.0 / 1100, 0.75, 700.0 / 900},
		{"direct has no ratio to itself", p.hsCell(peerDirect, 1).ConnsVsDirect, 0, 0, 0},
		{"direct has no proxy cores", p.hsCell(peerDirect, 64).CoresUsed, 0, 0, 0},
		{"meshgate cores at c=64", p.hsCell(peerMeshgate, 64).CoresUsed, 0.47, 0.45, 0.48},
		{"meshgate CPU ms per 1000 conns", p.hsCell(peerMeshgate, 64).CPUMsPer1000, 0.94e6 / 3600, 0.9e6 / 3800, 0.96e6 / 3400},
		{"haproxy download vs direct skips the failed run", tpCell(p.Download, peerHAProxy, 8).VsDirect, 1000.0 / 1100, 800.0 / 900, 0.91},
		{"meshgate raw vs direct", tpCell(p.Raw, peerMeshgate, 8).VsDirect, 3000.0 / 4400, 0.67, 2500.0 / 3600},
		{"meshgate idle RSS 2 s", p.idleOf(peerMeshgate).RSS2s, 9.76, 9.5, 10},
		{"haproxy idle Pss", p.idleOf(peerHAProxy).Pss, 3.1, 3.1, 3.2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.med == 0 && tc.min == 0 && tc.max == 0 {
				if tc.got != nil {
					t.Fatalf("finish() set %s = %+v, want it absent", tc.name, *tc.got)
				}
				return
			}
			if !within(tc.got, tc.med, tc.min, tc.max) {
				t.Fatalf("finish() set %s = %+v, want median %.4f [%.4f..%.4f]", tc.name, tc.got, tc.med, tc.min, tc.max)
			}
		})
	}
	if c := p.hsCell(peerMeshgate, 64); c.Errors != 2 || !strings.HasPrefix(c.FirstError, "proxybench: dial") {
		t.Errorf("meshgate c=64 errors = %d (%q), want 2 and the dial error", c.Errors, c.FirstError)
	}
	if c := p.idleOf(peerHAProxy); c.Opened != 9400 || c.Requested != 9500 || c.Errors != 100 {
		t.Errorf("haproxy idle opened %d/%d, %d errors; want the fewest opened, 9400/9500, and 100 errors", c.Opened, c.Requested, c.Errors)
	}
	if c := tpCell(p.Download, peerHAProxy, 8); c.Errors != 1 || c.Bytes != int64(2e6*(910+1000+800)) {
		t.Errorf("haproxy download bytes %d, errors %d; want the sum of the runs and 1 error", c.Bytes, c.Errors)
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
	for _, key := range []string{`"mode": "pinned"`, `"proxy_cores_used": {`, `"rss_2s_kib_per_conn": {`, `"tls_download": [`, `"median": 750`} {
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

// checkFigures fails t for every cell of r that lacks a positive figure:
// every mode of cfg that could run has every row of the summary for every
// peer that started, and the TLS download moved exactly what the backend
// says it sent.
func checkFigures(t *testing.T, r *results, cfg config) {
	t.Helper()
	if len(r.Modes) == 0 {
		t.Fatalf("run() gave no mode (notes: %q)", r.Notes)
	}
	for _, m := range r.Modes {
		want := 0
		for _, p := range m.Peers {
			if p.Skipped != "" {
				t.Errorf("%s: peer %s skipped: %s", m.Mode, p.Name, p.Skipped)
				continue
			}
			want++
		}
		if m.Mode == modePinned {
			for _, p := range m.Peers {
				if p.Name != peerDirect && p.Skipped == "" && !strings.HasSuffix(p.Setup, "runs on CPUs "+formatCPUList([]int{mustProxyCPU(t)})) {
					t.Errorf("pinned: peer %s setup %q, want it to run on the proxy CPU only", p.Name, p.Setup)
				}
			}
		}
		if got := len(m.Handshakes); got != want*len(cfg.Concurrency) {
			t.Errorf("%s: %d handshake cells, want %d", m.Mode, got, want*len(cfg.Concurrency))
		}
		for _, c := range m.Handshakes {
			if len(c.Runs) != cfg.Runs || c.ConnsPerSec == nil || c.ConnsPerSec.Median <= 0 || c.P50Ms == nil || c.P99Ms.Median < c.P50Ms.Median {
				t.Errorf("%s handshakes %s c=%d: %d runs, conn/s %s, p50 %s, p99 %s, errors %d (%s); want %d runs of positive figures",
					m.Mode, c.Peer, c.Concurrency, len(c.Runs), c.ConnsPerSec.format("%.1f"), c.P50Ms.format("%.3f"), c.P99Ms.format("%.3f"), c.Errors, c.FirstError, cfg.Runs)
			}
			if c.Peer == peerDirect {
				continue
			}
			// CPU time comes in clock ticks (10 ms): a short cell of a
			// light proxy can read 0 ticks, so 0 is allowed here.
			if c.CoresUsed == nil || c.CoresUsed.Median < 0 || c.CoresUsed.Max > float64(runtime.NumCPU())+0.5 {
				t.Errorf("%s handshakes %s c=%d: proxy cores %s (%s), want a figure within the core count", m.Mode, c.Peer, c.Concurrency, c.CoresUsed.format("%.2f"), c.FirstError)
			}
			if c.ConnsVsDirect == nil || c.ConnsVsDirect.Median <= 0 {
				t.Errorf("%s handshakes %s c=%d: conn/s vs direct %s, want a ratio", m.Mode, c.Peer, c.Concurrency, c.ConnsVsDirect.format("%.2f"))
			}
		}
		for _, part := range []struct {
			name  string
			cells []throughputCell
		}{{"TLS download", m.Download}, {"raw copy", m.Raw}} {
			if got := len(part.cells); got != want*len(cfg.Streams) {
				t.Errorf("%s: %d %s cells, want %d", m.Mode, got, part.name, want*len(cfg.Streams))
			}
			for _, c := range part.cells {
				if len(c.Runs) != cfg.Runs || c.Bytes <= 0 || c.MBPerSec == nil || c.MBPerSec.Median <= 0 || c.Errors != 0 {
					t.Errorf("%s %s %s streams=%d: %d runs, %d bytes, %s MB/s, %d errors (%s); want %d runs, positive figures, no error",
						m.Mode, part.name, c.Peer, c.Streams, len(c.Runs), c.Bytes, c.MBPerSec.format("%.1f"), c.Errors, c.FirstError, cfg.Runs)
				}
				if c.Peer != peerDirect && (c.VsDirect == nil || c.VsDirect.Median <= 0) {
					t.Errorf("%s %s %s streams=%d: vs direct %s, want a ratio", m.Mode, part.name, c.Peer, c.Streams, c.VsDirect.format("%.2f"))
				}
			}
		}
		for _, c := range m.Download {
			for _, s := range c.Runs {
				if s.BackendBytes == nil || *s.BackendBytes != s.Bytes {
					t.Errorf("%s TLS download %s streams=%d run %d: clients counted %d bytes, backend sent %s", m.Mode, c.Peer, c.Streams, s.Run, s.Bytes, fmtInt(s.BackendBytes))
				}
			}
		}
		if cfg.SkipIdle {
			continue
		}
		if got := len(m.Idle); got != want-1 && !(want == 1 && got == 0) {
			t.Errorf("%s: %d idle cells, want one per proxy (%d)", m.Mode, got, want-1)
		}
		for _, c := range m.Idle {
			if len(c.Runs) != cfg.Runs || c.Opened != c.Requested || c.FirstError != "" || c.RSS2s == nil || c.Pss == nil || c.PeakRSS == nil ||
				c.FDs == nil || c.FDs.Median < 1 || c.PeakRSS.Max < c.RSS2s.Min || c.Refill == nil || c.RefillPeak == nil || c.RefillPeak.Max < c.Refill.Min {
				t.Errorf("%s idle %s: %d runs, opened %d/%d, RSS 2 s %s, peak %s, Pss %s, fds %s (%s); want every run, all opened, peak >= RSS at 2 s, >= 1 fd per conn, a refill figure",
					m.Mode, c.Peer, len(c.Runs), c.Opened, c.Requested, c.RSS2s.format("%.2f"), c.PeakRSS.format("%.2f"), c.Pss.format("%.2f"), c.FDs.format("%.2f"), c.FirstError)
			}
			for _, s := range c.Runs {
				if s.RefillOpened != s.Requested {
					t.Errorf("%s idle %s run %d: refill opened %d of %d", m.Mode, c.Peer, s.Run, s.RefillOpened, s.Requested)
				}
				if s.At2s.PIDs == 0 || s.After.PIDs == 0 || s.Before.PIDs == 0 || s.Refill.PIDs == 0 {
					t.Errorf("%s idle %s run %d: samples before %+v, at 2 s %+v, after %+v; want all taken", m.Mode, c.Peer, s.Run, s.Before, s.At2s, s.After)
				}
			}
		}
	}
	if t.Failed() {
		var b bytes.Buffer
		writeReport(&b, r)
		t.Logf("report:\n%s", b.String())
	}
}

// fmtInt renders an optional count.
func fmtInt(v *int64) string {
	if v == nil {
		return "nothing"
	}
	return strconv.FormatInt(*v, 10)
}

// mustProxyCPU is the CPU planPinning gives the proxy on this machine.
func mustProxyCPU(t *testing.T) int {
	t.Helper()
	allowed, err := allowedCPUs(0)
	if err != nil {
		t.Fatal(err)
	}
	return allowed[len(allowed)-1]
}

// tinyConfig is a run of the given peers in both modes with tiny samples and
// counts: two runs, so that every summary has more than one sample.
func tinyConfig(t *testing.T, peers ...string) config {
	cfg := shortConfig()
	cfg.Runs = 2
	cfg.Duration = 150 * time.Millisecond
	cfg.Concurrency = []int{1, 4}
	cfg.DetailAt = 4
	cfg.Streams = []int{1, 2}
	cfg.IdleConns = 40
	cfg.IdleOpenTimeout = 30 * time.Second
	cfg.Peers = peers
	cfg.Install = false
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	return cfg
}

// runTiny runs cfg and checks which modes it measured.
func runTiny(t *testing.T, cfg config) *results {
	t.Helper()
	r, err := run(t.Context(), cfg)
	if err != nil {
		var b bytes.Buffer
		if r != nil {
			writeReport(&b, r)
		}
		t.Fatalf("run(%v) error = %v\n%s", cfg.Peers, err, b.String())
	}
	if _, err := planPinning(mustAllowed(t), -1); err != nil {
		t.Logf("pinned mode cannot run here (%v): only the unpinned mode is checked", err)
		if r.mode(modePinned) != nil {
			t.Errorf("run() measured the pinned mode although %v", err)
		}
	} else if r.mode(modePinned) == nil {
		t.Errorf("run() left out the pinned mode (notes %q)", r.Notes)
	}
	return r
}

func mustAllowed(t *testing.T) []int {
	t.Helper()
	a, err := allowedCPUs(0)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestHarnessDirect runs the harness against the backends alone in both
// modes, so that it is exercised even where no proxy is installed.
func TestHarnessDirect(t *testing.T) {
	cfg := tinyConfig(t, peerDirect)
	r := runTiny(t, cfg)
	checkFigures(t, r, cfg)
	after, err := allowedCPUs(0)
	if err != nil || !slices.Equal(after, mustAllowed(t)) || len(after) != runtime.NumCPU() {
		t.Errorf("CPUs allowed after run() = %v (%v), want all %d back", after, err, runtime.NumCPU())
	}
}

// TestHarnessPeers runs the tiny harness with every peer this machine has:
// meshgate when MESHGATE_BIN is set, HAProxy and nginx when installed
// (nothing is installed by the test). Every row must come out for each.
func TestHarnessPeers(t *testing.T) {
	peers := []string{peerDirect}
	bin := os.Getenv("MESHGATE_BIN")
	if bin != "" {
		peers = append(peers, peerMeshgate)
	} else {
		t.Log("meshgate left out: MESHGATE_BIN not set")
	}
	for _, name := range []string{peerHAProxy, peerNginx} {
		bin := findBin(name)
		if bin == "" {
			t.Logf("%s left out: not installed", name)
			continue
		}
		if name == peerNginx {
			if _, ok, err := nginxStream(t.Context(), bin); err != nil || !ok {
				t.Logf("nginx left out: no stream module (%v)", err)
				continue
			}
		}
		peers = append(peers, name)
	}
	if len(peers) == 1 {
		t.Skip("no proxy available: set MESHGATE_BIN or install haproxy / nginx")
	}
	cfg := tinyConfig(t, peers...)
	cfg.MeshgateBin = bin
	r := runTiny(t, cfg)
	checkFigures(t, r, cfg)
	if bin != "" && len(r.Goals) == 0 {
		t.Errorf("run() with meshgate checked no goal")
	}
}

// TestProxyPeers starts HAProxy and nginx when installed, routes one TLS
// exchange and one raw stream through each, and checks that Close leaves no
// process behind.
func TestProxyPeers(t *testing.T) {
	p, err := newPKI(tlsName)
	if err != nil {
		t.Fatal(err)
	}
	tlsSrv, err := listenServer((&tlsBackend{cfg: p.serverConfig(), maxLife: 10 * time.Second}).serve)
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
		{"fixed run", func(*results) {}, "missed,missed,missed,missed,missed,missed,missed,missed,missed"},
		{"meshgate skipped", func(r *results) { r.Peers[1].Skipped = "no binary" }, ""},
		{"handshakes as fast as direct", func(r *results) {
			p := r.mode(modePinned)
			for i := range p.hsCell(peerMeshgate, 1).Runs {
				p.hsCell(peerMeshgate, 1).Runs[i].ConnsPerSec = p.hsCell(peerDirect, 1).Runs[i].ConnsPerSec
			}
		}, "missed,met,missed,missed,missed,missed,missed,missed,missed"},
		{"few cores", func(r *results) {
			for i := range r.mode(modePinned).hsCell(peerMeshgate, 64).Runs {
				*r.mode(modePinned).hsCell(peerMeshgate, 64).Runs[i].ProxyCPUSeconds = 0.4
			}
		}, "met,missed,missed,missed,missed,missed,missed,missed,missed"},
		{"small idle connections", func(r *results) {
			for i := range r.mode(modePinned).idleOf(peerMeshgate).Runs {
				s := &r.mode(modePinned).idleOf(peerMeshgate).Runs[i]
				s.RSS2sKiBPerConn, s.PeakRSSKiBPerConn, s.PssKiBPerConn, s.RefillRSS2sKiBPerConn = 2.4, 2.45, 2.5, 2.3
			}
		}, "missed,missed,missed,missed,missed,met,met,met,met"},
		{"refill keeps the first fill's memory", func(r *results) {
			for i := range r.mode(modePinned).idleOf(peerMeshgate).Runs {
				s := &r.mode(modePinned).idleOf(peerMeshgate).Runs[i]
				s.RSS2sKiBPerConn, s.PeakRSSKiBPerConn, s.PssKiBPerConn, s.RefillRSS2sKiBPerConn = 2.4, 2.45, 2.5, 4.9
			}
		}, "missed,missed,missed,missed,missed,met,met,met,missed"},
		{"unpinned only", func(r *results) { r.Modes = r.Modes[1:] }, "missed"},
		{"unpinned lacks meshgate", func(r *results) {
			u := r.mode(modeUnpinned)
			u.Handshakes = slices.DeleteFunc(u.Handshakes, func(c handshakeCell) bool { return c.Peer == peerMeshgate })
		}, "missed,missed,n/a,missed,missed,missed,missed,missed,missed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := fixedResults()
			tc.modify(r)
			for i := range r.Modes {
				r.Modes[i].finish()
			}
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

func TestParseCPUList(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []int
		wantErr bool
	}{
		{"0-1", []int{0, 1}, false},
		{"\t0-1\n", []int{0, 1}, false},
		{"3", []int{3}, false},
		{"0,2-4,8", []int{0, 2, 3, 4, 8}, false},
		{"4,1-2,2", []int{1, 2, 4}, false},
		{"", nil, true},
		{",", nil, true},
		{"0-", nil, true},
		{"-1", nil, true},
		{"3-1", nil, true},
		{"0-1-2", nil, true},
		{"a", nil, true},
		{"+1", nil, true},
		{"1 ,2", nil, true},
		{"4096", nil, true},
		{"0-99999999999999999999", nil, true},
	} {
		got, err := parseCPUList(tc.in)
		if (err != nil) != tc.wantErr || !slices.Equal(got, tc.want) {
			t.Errorf("parseCPUList(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
		if err != nil && !errors.Is(err, errProcFormat) {
			t.Errorf("parseCPUList(%q) error %v does not wrap errProcFormat", tc.in, err)
		}
	}
	if got := formatCPUList([]int{0, 2, 3}); got != "0,2,3" {
		t.Errorf("formatCPUList = %q, want 0,2,3", got)
	}
	self, err := allowedCPUs(0)
	if err != nil || len(self) == 0 {
		t.Fatalf("allowedCPUs(self) = %v, %v; want at least one CPU", self, err)
	}
}

func FuzzParseCPUList(f *testing.F) {
	for _, s := range []string{"0-1", "0,2-4,8", "3-1", "0-", "4096", "0-4095"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cpus, err := parseCPUList(s)
		if err != nil {
			if !errors.Is(err, errProcFormat) {
				t.Fatalf("parseCPUList(%q) error %v does not wrap errProcFormat", s, err)
			}
			return
		}
		if len(cpus) == 0 || !slices.IsSorted(cpus) || len(slices.Compact(slices.Clone(cpus))) != len(cpus) || cpus[0] < 0 || cpus[len(cpus)-1] > maxCPU {
			t.Fatalf("parseCPUList(%q) = %v, want sorted distinct CPUs in [0, %d]", s, cpus, maxCPU)
		}
		again, err := parseCPUList(formatCPUList(cpus))
		if err != nil || !slices.Equal(again, cpus) {
			t.Fatalf("parseCPUList(formatCPUList(%v)) = %v, %v", cpus, again, err)
		}
	})
}

func TestPlanPinning(t *testing.T) {
	if findBin("taskset") == "" {
		t.Skip("taskset not installed (util-linux)")
	}
	for _, tc := range []struct {
		name      string
		allowed   []int
		proxyCPU  int
		wantProxy []int
		wantLoad  []int
	}{
		{"two CPUs", []int{0, 1}, -1, []int{1}, []int{0}},
		{"four CPUs, proxy picked", []int{0, 1, 2, 3}, 0, []int{0}, []int{1, 2, 3}},
		{"one CPU", []int{0}, -1, nil, nil},
		{"proxy CPU not allowed", []int{0, 1}, 5, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := planPinning(tc.allowed, tc.proxyCPU)
			if tc.wantProxy == nil {
				if !errors.Is(err, errUnavailable) {
					t.Fatalf("planPinning(%v, %d) error = %v, want errUnavailable", tc.allowed, tc.proxyCPU, err)
				}
				return
			}
			if err != nil || !slices.Equal(p.proxy, tc.wantProxy) || !slices.Equal(p.load, tc.wantLoad) || !slices.Equal(p.all, tc.allowed) {
				t.Fatalf("planPinning(%v, %d) = %+v, %v; want proxy %v, load %v", tc.allowed, tc.proxyCPU, p, err, tc.wantProxy, tc.wantLoad)
			}
		})
	}
	bin, args := pinnedCommand("/usr/bin/taskset", []int{1}, "/usr/sbin/haproxy", []string{"-db"})
	if bin != "/usr/bin/taskset" || !slices.Equal(args, []string{"-c", "1", "/usr/sbin/haproxy", "-db"}) {
		t.Errorf("pinnedCommand = %s %v, want taskset -c 1 haproxy -db", bin, args)
	}
	if bin, args := pinnedCommand("/usr/bin/taskset", nil, "/x", []string{"y"}); bin != "/x" || !slices.Equal(args, []string{"y"}) {
		t.Errorf("pinnedCommand without CPUs = %s %v, want the command unchanged", bin, args)
	}
}

// TestPinnedProcess starts a child under taskset as the proxies are, and
// reads its affinity back from /proc.
func TestPinnedProcess(t *testing.T) {
	ts := findBin("taskset")
	if ts == "" {
		t.Skip("taskset not installed (util-linux)")
	}
	cpu := mustAllowed(t)[0]
	bin, args := pinnedCommand(ts, []int{cpu}, "sleep", []string{"30"})
	p, err := startProc("sleep", bin, args, nil, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	// taskset sets the mask, then execs: wait until the process is sleep.
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p.PID()))
		if strings.TrimSpace(string(b)) == "sleep" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d is %q after 10s, want sleep", p.PID(), b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	got, err := allowedCPUs(p.PID())
	if err != nil || !slices.Equal(got, []int{cpu}) {
		t.Fatalf("allowedCPUs(pinned child) = %v, %v; want [%d]", got, err, cpu)
	}
}

// downloadBackend serves downloads on a fresh port.
func downloadBackend(t *testing.T) (*tlsBackend, *server, *tls.Config) {
	t.Helper()
	p, err := newPKI(tlsName)
	if err != nil {
		t.Fatal(err)
	}
	b := &tlsBackend{cfg: p.serverConfig(), maxLife: 20 * time.Second}
	srv, err := listenServer(b.serve)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return b, srv, p.clientConfig(tlsName)
}

func TestDownload(t *testing.T) {
	b, srv, cfg := downloadBackend(t)
	for _, tc := range []struct {
		name     string
		streams  int
		d        time.Duration
		maxBytes int64
		exact    bool // each stream gets exactly maxBytes
	}{
		{"time-bounded", 3, 200 * time.Millisecond, 1 << 40, false},
		{"byte-bounded, not a whole chunk", 2, 10 * time.Second, downloadChunk*3 + 5, true},
		{"empty budget", 1, 10 * time.Second, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := b.sent.Load()
			start := time.Now()
			run := runDownload(t.Context(), srv.Addr(), cfg, tc.streams, tc.d, tc.maxBytes)
			sent := b.sent.Load() - before
			if run.Errors != 0 || run.Bytes != sent {
				t.Fatalf("runDownload = %d bytes, %d errors (%v); backend sent %d", run.Bytes, run.Errors, run.FirstErr, sent)
			}
			if tc.exact && run.Bytes != int64(tc.streams)*tc.maxBytes {
				t.Fatalf("runDownload with a budget of %d per stream = %d bytes, want %d", tc.maxBytes, run.Bytes, int64(tc.streams)*tc.maxBytes)
			}
			if !tc.exact && run.Bytes <= 0 {
				t.Fatalf("runDownload for %s = %d bytes, want some", tc.d, run.Bytes)
			}
			if tc.exact && time.Since(start) > 5*time.Second {
				t.Logf("a byte-bounded download took %s", time.Since(start))
			}
		})
	}
	if err := quiesce(t.Context(), srv); err != nil {
		t.Fatalf("backend still holds download connections: %v", err)
	}
}

func TestCheckTrailer(t *testing.T) {
	tail := func(v uint64) (b [8]byte) { binary.BigEndian.PutUint64(b[:], v); return b }
	for _, tc := range []struct {
		name    string
		total   int64
		tail    [8]byte
		want    int64
		wantErr bool
	}{
		{"matches", 1008, tail(1000), 1000, false},
		{"trailer only", 8, tail(0), 0, false},
		{"short by one", 1008, tail(1001), 0, true},
		{"more than stated", 1009, tail(1000), 0, true},
		{"no trailer", 7, tail(0), 0, true},
		{"nothing", 0, tail(0), 0, true},
		{"huge claim", 16, tail(1 << 63), 0, true},
	} {
		got, err := checkTrailer(tc.total, tc.tail)
		if (err != nil) != tc.wantErr || got != tc.want || (err != nil && !errors.Is(err, errShortAck)) {
			t.Errorf("checkTrailer(%s) = %d, %v; want %d, error %v (wrapping errShortAck)", tc.name, got, err, tc.want, tc.wantErr)
		}
	}
}

// TestDownloadLyingBackend serves downloads whose trailer disagrees with
// the payload, or that end early: the client must count none of it.
func TestDownloadLyingBackend(t *testing.T) {
	p, err := newPKI(tlsName)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		payload int
		trailer []byte
	}{
		{"trailer one short", 70000, binary.BigEndian.AppendUint64(nil, 69999)},
		{"no trailer", 3, nil},
		{"trailer cut", 100, []byte{0, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := listenServer(func(c net.Conn) {
				tc2 := tls.Server(c, p.serverConfig())
				c.SetDeadline(time.Now().Add(10 * time.Second))
				req := make([]byte, 9)
				if _, err := io.ReadFull(tc2, req); err != nil {
					return
				}
				tc2.Write(make([]byte, tc.payload))
				tc2.Write(tc.trailer)
				tc2.CloseWrite()
				io.Copy(io.Discard, tc2)
			})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			run := runDownload(t.Context(), srv.Addr(), p.clientConfig(tlsName), 1, 10*time.Second, 1<<20)
			if run.Errors != 1 || run.Bytes != 0 || !errors.Is(run.FirstErr, errShortAck) {
				t.Fatalf("runDownload from a backend that %s = %d bytes, %d errors (%v); want 0 bytes and an errShortAck", tc.name, run.Bytes, run.Errors, run.FirstErr)
			}
		})
	}
}
