package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"
)

// errConfig says a setting is out of range; the message names the field.
var errConfig = errors.New("proxybench: invalid config")

// config is one benchmark run. Build it with defaultConfig or shortConfig.
type config struct {
	// Duration is the length of one sample: one peer, one cell, one run.
	// Default 2s (short: 300ms).
	Duration time.Duration
	// Runs is how many times every figure is measured. Each run starts the
	// proxies afresh, measures idle connections first, then visits every
	// peer for every cell in a rotating order, so that outside load falls
	// on all peers alike; modes alternate from run to run. The report gives
	// median, min and max. Default 3 (short: 1).
	Runs int
	// Modes lists the modes to measure, in report order: modePinned (each
	// proxy on one CPU of its own with one worker, this program on the
	// others) and modeUnpinned (no affinity, Workers workers). Default both.
	Modes []string
	// ProxyCPU is the CPU of the proxy in the pinned mode; negative picks
	// the highest CPU this process may use. Default -1.
	ProxyCPU int
	// Concurrency lists the handshake test's client counts. Default 1, 16, 64.
	Concurrency []int
	// DetailAt is the concurrency whose cell gives the proxy-cores figure of
	// the summary. Default 64; it must be in Concurrency.
	DetailAt int
	// Streams lists the parallel stream counts of the TLS download and raw
	// copy tests. Default 1, 8.
	Streams []int
	// IdleConns is how many idle connections the memory test opens through
	// each proxy. Default 9500 (short: 200). Lowered when the open-file
	// limit cannot hold them, and the report says so.
	IdleConns int
	// SkipIdle leaves out the idle-connection test.
	SkipIdle bool
	// Peers lists the peers to measure, in report order. Default all.
	Peers []string
	// JSONFile, when set, receives the results as JSON.
	JSONFile string
	// MeshgateBin is the meshgate binary; empty skips meshgate.
	// Default $MESHGATE_BIN.
	MeshgateBin string
	// Install lets the run apt-get HAProxy and nginx when missing (root
	// only). Default true.
	Install bool
	// Workers is the proxies' worker count in the unpinned mode: GOMAXPROCS
	// for meshgate, nbthread for HAProxy, worker_processes for nginx (the
	// pinned mode uses 1). Default 2.
	Workers int
	// MaxBytesPerCell bounds what one throughput sample moves, summed over
	// streams. Default 64 GiB.
	MaxBytesPerCell int64
	// MaxConnsPerCell bounds the connections of one handshake sample.
	// Default 1,000,000.
	MaxConnsPerCell int64
	// IdleOpenTimeout bounds opening the idle connections of one peer.
	// Default 3m.
	IdleOpenTimeout time.Duration
	// Timeout bounds the whole run. Default 30m.
	Timeout time.Duration
	// KeepDir keeps the temporary folder with the proxies' configs and
	// prints its path.
	KeepDir bool
	// Logger receives progress; nil discards it.
	Logger *slog.Logger
}

// defaultConfig is the full benchmark that `make bench` runs.
func defaultConfig() config {
	return config{
		Duration:        2 * time.Second,
		Runs:            3,
		Modes:           slices.Clone(allModes),
		ProxyCPU:        -1,
		Concurrency:     []int{1, 16, 64},
		DetailAt:        64,
		Streams:         []int{1, 8},
		IdleConns:       9500,
		Peers:           slices.Clone(allPeers),
		Install:         true,
		Workers:         2,
		MaxBytesPerCell: 64 << 30,
		MaxConnsPerCell: 1_000_000,
		IdleOpenTimeout: 3 * time.Minute,
		Timeout:         30 * time.Minute,
	}
}

// shortConfig is defaultConfig with one run of 300 ms samples and 200 idle
// connections: a smoke run that proves every figure is still produced.
func shortConfig() config {
	c := defaultConfig()
	c.Duration = 300 * time.Millisecond
	c.Runs = 1
	c.IdleConns = 200
	c.IdleOpenTimeout = time.Minute
	c.Timeout = 10 * time.Minute
	return c
}

// validate reports the first setting out of range.
func (c config) validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", errConfig, field, fmt.Sprintf(format, args...))
	}
	switch {
	case c.Duration < 100*time.Millisecond || c.Duration > 10*time.Minute:
		return bad("Duration", "%s not in [100ms, 10m]", c.Duration)
	case c.Runs < 1 || c.Runs > 100:
		return bad("Runs", "%d not in [1, 100]", c.Runs)
	case len(c.Modes) == 0:
		return bad("Modes", "empty")
	case c.ProxyCPU > maxCPU:
		return bad("ProxyCPU", "%d > %d", c.ProxyCPU, maxCPU)
	case len(c.Concurrency) == 0:
		return bad("Concurrency", "empty")
	case len(c.Streams) == 0:
		return bad("Streams", "empty")
	case !c.SkipIdle && (c.IdleConns < 1 || c.IdleConns > 1_000_000):
		return bad("IdleConns", "%d not in [1, 1000000]", c.IdleConns)
	case len(c.Peers) == 0:
		return bad("Peers", "empty")
	case c.Workers < 1 || c.Workers > 256:
		return bad("Workers", "%d not in [1, 256]", c.Workers)
	case c.MaxBytesPerCell < 1:
		return bad("MaxBytesPerCell", "%d < 1", c.MaxBytesPerCell)
	case c.MaxConnsPerCell < 1:
		return bad("MaxConnsPerCell", "%d < 1", c.MaxConnsPerCell)
	case c.IdleOpenTimeout <= 0:
		return bad("IdleOpenTimeout", "%s <= 0", c.IdleOpenTimeout)
	case c.Timeout <= 0:
		return bad("Timeout", "%s <= 0", c.Timeout)
	}
	for _, n := range c.Concurrency {
		if n < 1 || n > 4096 {
			return bad("Concurrency", "%d not in [1, 4096]", n)
		}
	}
	if !slices.Contains(c.Concurrency, c.DetailAt) {
		return bad("DetailAt", "%d not in Concurrency %v", c.DetailAt, c.Concurrency)
	}
	for _, n := range c.Streams {
		if n < 1 || n > 256 {
			return bad("Streams", "%d not in [1, 256]", n)
		}
	}
	modes := make(map[string]bool)
	for _, m := range c.Modes {
		if !slices.Contains(allModes, m) {
			return bad("Modes", "unknown mode %q (known: %s)", m, strings.Join(allModes, ","))
		}
		if modes[m] {
			return bad("Modes", "%q listed twice", m)
		}
		modes[m] = true
	}
	seen := make(map[string]bool)
	for _, p := range c.Peers {
		if !slices.Contains(allPeers, p) {
			return bad("Peers", "unknown peer %q (known: %s)", p, strings.Join(allPeers, ","))
		}
		if seen[p] {
			return bad("Peers", "%q listed twice", p)
		}
		seen[p] = true
	}
	return nil
}

// parseFlags builds the config from command-line args; getenv supplies
// MESHGATE_BIN. Usage and errors go to out. It returns flag.ErrHelp for -h.
func parseFlags(args []string, getenv func(string) string, out io.Writer) (config, error) {
	fs := flag.NewFlagSet("proxybench", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(out, "usage: proxybench [flags]\n\n"+
			"Compares direct, meshgate, HAProxy and nginx SNI passthrough on loopback,\n"+
			"with each proxy pinned to a CPU of its own and unpinned: handshake conn/s\n"+
			"and proxy cores, TLS download and raw copy throughput, and memory and fds\n"+
			"per idle connection.\n\nflags:\n")
		fs.PrintDefaults()
	}
	def := defaultConfig()
	var (
		short    = fs.Bool("short", false, "smoke run: 1 run of 300ms samples and 200 idle connections (explicit flags still win)")
		duration = fs.Duration("duration", def.Duration, "length of one sample (one peer, one cell, one run)")
		modes    = fs.String("modes", strings.Join(def.Modes, ","), "comma-separated modes: pinned (proxy on a CPU of its own, 1 worker), unpinned")
		proxyCPU = fs.Int("proxy-cpu", def.ProxyCPU, "CPU of the proxy in the pinned mode (-1: the highest allowed)")
		conns    = fs.Int("conns", def.IdleConns, "idle connections opened through each proxy")
		only     = fs.String("only", strings.Join(def.Peers, ","), "comma-separated peers to measure: "+strings.Join(allPeers, ","))
		skipIdle = fs.Bool("skip-idle", false, "leave out the idle-connection memory test")
		jsonFile = fs.String("json", "", "also write the results as JSON to `FILE`")
		meshgate = fs.String("meshgate", getenv("MESHGATE_BIN"), "meshgate binary (default $MESHGATE_BIN)")
		install  = fs.Bool("install", def.Install, "apt-get install haproxy / nginx when missing (root only)")
		workers  = fs.Int("workers", def.Workers, "worker threads/processes per proxy in the unpinned mode")
		timeout  = fs.Duration("timeout", def.Timeout, "bound on the whole run")
		keep     = fs.Bool("keep", false, "keep the folder with the proxies' configs and print its path")
		runs     = fs.Int("runs", def.Runs, "interleaved runs; figures are median [min..max] over them (short: 1)")
	)
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return config{}, fmt.Errorf("%w: unexpected arguments %q", errConfig, fs.Args())
	}
	c := def
	if *short {
		c = shortConfig()
	}
	set := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["duration"] || !*short {
		c.Duration = *duration
	}
	if set["conns"] || !*short {
		c.IdleConns = *conns
	}
	if set["runs"] || !*short {
		c.Runs = *runs
	}
	if set["timeout"] || !*short {
		c.Timeout = *timeout
	}
	c.Peers = nil
	for _, p := range strings.Split(*only, ",") {
		if p = strings.TrimSpace(p); p != "" {
			c.Peers = append(c.Peers, p)
		}
	}
	c.Modes = nil
	for _, m := range strings.Split(*modes, ",") {
		if m = strings.TrimSpace(m); m != "" {
			c.Modes = append(c.Modes, m)
		}
	}
	c.ProxyCPU = *proxyCPU
	c.SkipIdle = *skipIdle
	c.JSONFile = *jsonFile
	c.MeshgateBin = *meshgate
	c.Install = *install
	c.Workers = *workers
	c.KeepDir = *keep
	if err := c.validate(); err != nil {
		return config{}, err
	}
	return c, nil
}
