package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	// fdReserve is the fds each process keeps for itself besides two per
	// idle connection (bench: client + backend side; proxy: both sides):
	// with the usual limit of 20,000, 9,616 connections fit.
	fdReserve = 768
	// idleWorkers open the idle connections in parallel.
	idleWorkers = 16
	// idleMaxErrors stops the idle test of a peer after so many failures.
	idleMaxErrors = 100
	// quiesceTimeout bounds the wait for the backends to drop the
	// connections of the previous cell.
	quiesceTimeout = 30 * time.Second
	// settleTimeout bounds the wait for a proxy's memory to stop moving.
	settleTimeout = 5 * time.Second
	// afterFill is when, after the last idle connection opened, the RSS a
	// user would see right after a burst is taken.
	afterFill = 2 * time.Second
	// peakInterval is how often the RSS is sampled during a fill.
	peakInterval = 100 * time.Millisecond
	// refillDrainTimeout bounds the wait, before the refill, for the proxy
	// to close every upstream of the first fill.
	refillDrainTimeout = 30 * time.Second
)

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	// Signals are caught until the end, so a second Ctrl-C cannot cut the
	// cleanup short; every stop is bounded.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	res, err := run(ctx, cfg)
	stop()
	code := 0
	if res != nil {
		if werr := writeReport(os.Stdout, res); werr != nil {
			fmt.Fprintln(os.Stderr, werr)
			code = 1
		}
		if cfg.JSONFile != "" {
			if werr := writeJSON(cfg.JSONFile, res); werr != nil {
				fmt.Fprintln(os.Stderr, werr)
				code = 1
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	os.Exit(code)
}

// raiseNoFile lifts RLIMIT_NOFILE to its hard limit (children inherit it)
// and returns that limit.
func raiseNoFile() (uint64, error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, fmt.Errorf("proxybench: getrlimit: %w", err)
	}
	if r.Cur < r.Max {
		r.Cur = r.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
			return 0, fmt.Errorf("proxybench: setrlimit: %w", err)
		}
	}
	return r.Max, nil
}

// kernelRelease returns the running kernel's release string.
func kernelRelease() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return runtime.GOOS
	}
	return "linux " + strings.TrimSpace(string(b))
}

// loadAvg returns the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// busy says whether the 1-minute load average in loadavg (as loadAvg
// returns it) exceeds the core count.
func busy(loadavg string, cores int) bool {
	f := strings.Fields(loadavg)
	if len(f) == 0 {
		return false
	}
	v, err := strconv.ParseFloat(f[0], 64)
	return err == nil && v > float64(cores)
}

// modePlan is one mode as run will measure it.
type modePlan struct {
	name    string
	workers int
	pin     *pinPlan // nil: unpinned
}

// bench holds what every run of every mode shares.
type bench struct {
	cfg       config
	log       *slog.Logger
	res       *results
	tlsB      *tlsBackend
	tlsSrv    *server
	rawSrv    *server
	clientCfg *tls.Config
	hello     []byte
	dir       string
	nofile    uint64
	idleN     int
}

// run measures every peer of cfg in every mode and returns what it
// measured. On an error or cancellation it returns the figures gathered so
// far with the error. Every process it started has stopped when it returns.
func run(ctx context.Context, cfg config) (*results, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	var res *results
	defer func() {
		if res == nil {
			return
		}
		res.Host.LoadEnd = loadAvg()
		for _, l := range []string{res.Host.LoadStart, res.Host.LoadEnd} {
			if busy(l, res.Host.Cores) {
				res.Notes = append(res.Notes, fmt.Sprintf(
					"load average %s on %d cores: other work competed for the CPU during the run, so figures are noisy; re-run on an idle machine",
					l, res.Host.Cores))
				break
			}
		}
	}()
	nofile, err := raiseNoFile()
	if err != nil {
		return nil, err
	}
	res = &results{
		Started: time.Now(),
		Host:    hostInfo{Cores: runtime.NumCPU(), Kernel: kernelRelease(), GoVersion: runtime.Version(), NoFile: nofile, LoadStart: loadAvg()},
		Settings: settings{
			SampleSeconds: cfg.Duration.Seconds(), Runs: cfg.Runs, Workers: cfg.Workers, DetailAt: cfg.DetailAt, IdleConns: cfg.IdleConns,
		},
	}
	idleN := cfg.IdleConns
	if fit := int(nofile-fdReserve) / 2; !cfg.SkipIdle && idleN > fit {
		idleN = max(fit, 1)
		res.Notes = append(res.Notes, fmt.Sprintf(
			"%d idle connections asked, %d used: open-file limit %d per process must hold 2 fds per connection in this process (client + backend) and in the proxy, plus %d spare",
			cfg.IdleConns, idleN, nofile, fdReserve))
		res.Settings.IdleConns = idleN
	}

	var plans []modePlan
	for _, m := range cfg.Modes {
		switch m {
		case modeUnpinned:
			plans = append(plans, modePlan{name: m, workers: cfg.Workers})
		case modePinned:
			allowed, err := allowedCPUs(0)
			if err != nil {
				res.Notes = append(res.Notes, "pinned mode skipped: "+err.Error())
				continue
			}
			pin, err := planPinning(allowed, cfg.ProxyCPU)
			if err != nil {
				res.Notes = append(res.Notes, "pinned mode skipped: "+err.Error())
				continue
			}
			plans = append(plans, modePlan{name: m, workers: 1, pin: &pin})
		}
	}
	if len(plans) == 0 {
		return res, fmt.Errorf("proxybench: no mode can run (see the notes)")
	}

	pki, err := newPKI(tlsName)
	if err != nil {
		return nil, err
	}
	tlsB := &tlsBackend{cfg: pki.serverConfig(), maxLife: cfg.Duration + 2*ackTimeout}
	tlsSrv, err := listenServer(tlsB.serve)
	if err != nil {
		return nil, err
	}
	defer tlsSrv.Close()
	rawSrv, err := listenServer(serveSink(cfg.Duration + 2*ackTimeout))
	if err != nil {
		return nil, err
	}
	defer rawSrv.Close()
	hello, err := clientHello(pki.clientConfig(rawName))
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "proxybench-")
	if err != nil {
		return nil, fmt.Errorf("proxybench: %w", err)
	}
	if cfg.KeepDir {
		res.Notes = append(res.Notes, "proxy configs kept in "+dir)
	} else {
		defer os.RemoveAll(dir)
	}
	for _, name := range cfg.Peers {
		res.Peers = append(res.Peers, peerInfo{Name: name})
	}
	b := &bench{cfg: cfg, log: log, res: res, tlsB: tlsB, tlsSrv: tlsSrv, rawSrv: rawSrv, clientCfg: pki.clientConfig(tlsName),
		hello: hello, dir: dir, nofile: nofile, idleN: idleN}
	modes := make([]modeResult, len(plans))
	for i, pl := range plans {
		modes[i] = modeResult{Mode: pl.name, Setup: "no CPU affinity; proxies get " + strconv.Itoa(pl.workers) + " workers"}
		if pl.pin != nil {
			modes[i].Setup = fmt.Sprintf("each proxy on CPU %s (taskset -c) with 1 worker; load generator and backends on CPU %s",
				formatCPUList(pl.pin.proxy), formatCPUList(pl.pin.load))
		}
		for _, name := range cfg.Peers {
			modes[i].Peers = append(modes[i].Peers, peerInfo{Name: name})
		}
	}
	finish := func() {
		for i := range modes {
			sortCells(&modes[i], cfg.Peers)
			modes[i].finish()
		}
		res.Modes = modes
		fillGoals(res)
	}
	// Runs alternate the order of the modes, and within a mode rotate the
	// order of the peers, so that load from outside this program weighs on
	// every mode and peer alike.
	for r := range cfg.Runs {
		for k := range plans {
			i := (k + r) % len(plans)
			if err := b.runMode(ctx, plans[i], r, &modes[i]); err != nil {
				finish()
				return res, err
			}
		}
	}
	finish()
	for _, p := range res.Peers {
		if p.Skipped == "" && p.Version == "" && p.Setup == "" {
			return res, fmt.Errorf("proxybench: peer %s never started", p.Name)
		}
	}
	return res, nil
}

// runMode starts the peers in mode pl, measures every figure once (run r)
// into m, and stops them.
func (b *bench) runMode(ctx context.Context, pl modePlan, r int, m *modeResult) error {
	cfg, log := b.cfg, b.log
	var env peerEnv
	if pl.pin != nil {
		if err := pinSelf(ctx, pl.pin.taskset, pl.pin.load); err != nil {
			return err
		}
		// Restore the CPUs even when ctx is done.
		defer func() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if err := pinSelf(rctx, pl.pin.taskset, pl.pin.all); err != nil {
				log.Warn("restoring CPU affinity", "err", err)
			}
		}()
		env.taskset, env.cpus = pl.pin.taskset, pl.pin.proxy
	}
	probe := func(ctx context.Context, addr string) error {
		c, _, err := exchange(ctx, addr, b.clientCfg)
		if err == nil {
			c.Close()
		}
		return err
	}
	var peers []peer
	defer func() {
		for _, p := range peers {
			p.Close()
		}
	}()
	for i, name := range cfg.Peers {
		pdir := filepath.Join(b.dir, fmt.Sprintf("%s-%s-%d", name, pl.name, r))
		if err := os.MkdirAll(pdir, 0o755); err != nil {
			return fmt.Errorf("proxybench: %w", err)
		}
		log.Info("starting peer", "peer", name, "mode", pl.name, "run", r+1)
		e := env
		e.dir, e.tlsBackend, e.rawBackend, e.workers = pdir, b.tlsSrv.Addr(), b.rawSrv.Addr(), pl.workers
		e.maxConns, e.nofile, e.install, e.meshgate, e.log, e.probe = b.idleN+256, b.nofile, cfg.Install, cfg.MeshgateBin, log, probe
		p, err := startPeer(ctx, name, e)
		if ctx.Err() != nil {
			return fmt.Errorf("proxybench: starting %s: %w", name, context.Cause(ctx))
		}
		if err != nil {
			log.Warn("skipping peer", "peer", name, "mode", pl.name, "run", r+1, "err", err)
			if m.Peers[i].Setup == "" {
				m.Peers[i].Skipped = err.Error()
			}
			if b.res.Peers[i].Version == "" && b.res.Peers[i].Setup == "" {
				b.res.Peers[i].Skipped = err.Error()
			}
			continue
		}
		peers = append(peers, p)
		setup := peerSetup(name, pl.workers)
		if p.PID() != 0 {
			if cpus, err := allowedCPUs(p.PID()); err == nil {
				setup += "; runs on CPUs " + formatCPUList(cpus)
			}
		}
		m.Peers[i].Setup, m.Peers[i].Skipped = setup, ""
		b.res.Peers[i].Skipped = ""
		if b.res.Peers[i].Version = p.Version(); p.Version() == "" {
			b.res.Peers[i].Setup = peerSetup(name, pl.workers)
		}
	}
	if len(peers) == 0 {
		return fmt.Errorf("proxybench: no peer could be started in mode %s", pl.name)
	}
	rot := func(k int) peer { return peers[(k+r)%len(peers)] }

	// The idle test goes first, on freshly started proxies, so that memory
	// left over from the load tests cannot hide what idle connections cost.
	if !cfg.SkipIdle {
		for k := range peers {
			p := rot(k)
			if p.PID() == 0 {
				continue
			}
			if err := quiesce(ctx, b.tlsSrv, b.rawSrv); err != nil {
				return err
			}
			log.Info("idle connections", "peer", p.Name(), "mode", pl.name, "run", r+1, "conns", b.idleN)
			s := measureIdle(ctx, p, b.clientCfg, b.idleN, cfg.IdleOpenTimeout, b.tlsSrv)
			s.Run = r
			c := idleCellFor(m, p.Name())
			c.Runs = append(c.Runs, s)
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
		}
	}
	for _, conc := range cfg.Concurrency {
		for k := range peers {
			p := rot(k)
			if err := quiesce(ctx, b.tlsSrv, b.rawSrv); err != nil {
				return err
			}
			log.Info("handshakes", "peer", p.Name(), "mode", pl.name, "run", r+1, "concurrency", conc)
			hr, ticks, cpuErr := handshakeRound(ctx, p, b.clientCfg, conc, cfg.Duration, cfg.MaxConnsPerCell)
			s := handshakeSampleOf(hr, ticks, cpuErr, p.PID() != 0)
			s.Run = r
			c := hsCellFor(m, p.Name(), conc)
			c.Runs = append(c.Runs, s)
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
		}
	}
	for _, kind := range []string{"download", "raw"} {
		for _, streams := range cfg.Streams {
			for k := range peers {
				p := rot(k)
				if err := quiesce(ctx, b.tlsSrv, b.rawSrv); err != nil {
					return err
				}
				log.Info(kind, "peer", p.Name(), "mode", pl.name, "run", r+1, "streams", streams)
				per := max(1, cfg.MaxBytesPerCell/int64(streams))
				var tr throughputRun
				cells := &m.Raw
				var sent int64
				if kind == "download" {
					before := b.tlsB.sent.Load()
					tr = runDownload(ctx, p.TLSAddr(), b.clientCfg, streams, cfg.Duration, per)
					sent = b.tlsB.sent.Load() - before
					cells = &m.Download
				} else {
					tr = runThroughput(ctx, p.RawAddr(), b.hello, streams, cfg.Duration, per)
				}
				s := throughputSampleOf(tr)
				if kind == "download" {
					s.BackendBytes = &sent
					if s.Errors == 0 && sent != s.Bytes {
						s.Errors++
						s.FirstError = fmt.Sprintf("%v: clients received %d payload bytes, the backend sent %d", errShortAck, s.Bytes, sent)
					}
				}
				s.Run = r
				c := tpCellFor(cells, p.Name(), streams)
				c.Runs = append(c.Runs, s)
				if ctx.Err() != nil {
					return context.Cause(ctx)
				}
			}
		}
	}
	return nil
}

// hsCellFor, tpCellFor and idleCellFor return the cell for the key,
// appending an empty one when there is none yet.
func hsCellFor(m *modeResult, peer string, conc int) *handshakeCell {
	if c := m.hsCell(peer, conc); c != nil {
		return c
	}
	m.Handshakes = append(m.Handshakes, handshakeCell{Peer: peer, Concurrency: conc})
	return &m.Handshakes[len(m.Handshakes)-1]
}

func tpCellFor(cells *[]throughputCell, peer string, streams int) *throughputCell {
	if c := tpCell(*cells, peer, streams); c != nil {
		return c
	}
	*cells = append(*cells, throughputCell{Peer: peer, Streams: streams})
	return &(*cells)[len(*cells)-1]
}

func idleCellFor(m *modeResult, peer string) *idleCell {
	if c := m.idleOf(peer); c != nil {
		return c
	}
	m.Idle = append(m.Idle, idleCell{Peer: peer})
	return &m.Idle[len(m.Idle)-1]
}

// sortCells puts the cells of m in report order: by concurrency or streams,
// then by the order of peers.
func sortCells(m *modeResult, peers []string) {
	pi := func(name string) int { return slices.Index(peers, name) }
	slices.SortStableFunc(m.Handshakes, func(a, b handshakeCell) int {
		return cmp.Or(cmp.Compare(a.Concurrency, b.Concurrency), cmp.Compare(pi(a.Peer), pi(b.Peer)))
	})
	for _, cells := range [][]throughputCell{m.Download, m.Raw} {
		slices.SortStableFunc(cells, func(a, b throughputCell) int {
			return cmp.Or(cmp.Compare(a.Streams, b.Streams), cmp.Compare(pi(a.Peer), pi(b.Peer)))
		})
	}
	slices.SortStableFunc(m.Idle, func(a, b idleCell) int { return cmp.Compare(pi(a.Peer), pi(b.Peer)) })
}

// quiesce waits until the backends serve no connection.
func quiesce(ctx context.Context, srvs ...*server) error {
	ctx, cancel := context.WithTimeout(ctx, quiesceTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		busy := int64(0)
		for _, s := range srvs {
			busy += s.Active()
		}
		if busy == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("proxybench: backends still serve %d connections after %s: %w", busy, quiesceTimeout, context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// errString returns err's text, or "".
func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// handshakeRound runs one handshake sample and measures the proxy's CPU
// ticks over it (0 for direct).
func handshakeRound(ctx context.Context, p peer, cfg *tls.Config, conc int, d time.Duration, maxConns int64) (handshakeRun, uint64, error) {
	if p.PID() == 0 {
		return runHandshakes(ctx, p.TLSAddr(), cfg, conc, d, maxConns), 0, nil
	}
	before, err := sampleTree(p.PID())
	run := runHandshakes(ctx, p.TLSAddr(), cfg, conc, d, maxConns)
	if err != nil {
		return run, 0, err
	}
	after, err := sampleTree(p.PID())
	if err != nil {
		return run, 0, err
	}
	return run, after.CPUTicks - min(before.CPUTicks, after.CPUTicks), nil
}

// handshakeSampleOf turns one handshake round into a sample; cpuTicks
// count only when a proxy is in the path (withCPU).
func handshakeSampleOf(run handshakeRun, cpuTicks uint64, cpuErr error, withCPU bool) handshakeSample {
	slices.Sort(run.Latencies)
	s := handshakeSample{
		Conns: run.Conns, Errors: run.Errors, FirstError: errString(run.FirstErr), Seconds: run.Elapsed.Seconds(),
		P50Ms: float64(percentile(run.Latencies, 0.50)) / 1e6,
		P99Ms: float64(percentile(run.Latencies, 0.99)) / 1e6,
	}
	if s.Seconds > 0 {
		s.ConnsPerSec = float64(s.Conns) / s.Seconds
	}
	switch {
	case cpuErr != nil:
		if s.FirstError == "" {
			s.FirstError = cpuErr.Error()
		}
	case withCPU:
		cpu := float64(cpuTicks) / clockTicks
		s.ProxyCPUSeconds = &cpu
	}
	return s
}

// throughputSampleOf turns one throughput run into a sample.
func throughputSampleOf(run throughputRun) throughputSample {
	s := throughputSample{Bytes: run.Bytes, Errors: run.Errors, FirstError: errString(run.FirstErr), Seconds: run.Elapsed.Seconds()}
	if s.Seconds > 0 {
		s.MBPerSec = float64(run.Bytes) / 1e6 / s.Seconds
	}
	return s
}

// measureIdle fills a proxy with n idle connections and returns its growth
// per connection: RSS 2 s after the last connection opened, the peak RSS
// until then, and Pss, RSS and fds once settled. It then closes them all,
// waits until the backend holds none, and fills the proxy again: the RSS 2 s
// after that second fill (over the same pre-fill baseline) shows what the
// proxy kept from the first and reuses.
func measureIdle(ctx context.Context, p peer, cfg *tls.Config, n int, openTimeout time.Duration, backend *server) idleSample {
	s := idleSample{Requested: n}
	before, err := settle(ctx, p.PID())
	if err != nil {
		s.FirstError = err.Error()
		return s
	}
	pids, err := processTree(p.PID())
	if err != nil {
		s.FirstError = err.Error()
		return s
	}
	conns, errs, firstErr, at2s, peak, err := fillIdle(ctx, p, pids, cfg, n, openTimeout)
	s.Opened, s.Errors, s.FirstError = len(conns), errs, errString(firstErr)
	if len(conns) == 0 {
		return s
	}
	if err != nil {
		closeAll(conns)
		s.FirstError = err.Error()
		return s
	}
	after, err := settle(ctx, p.PID())
	if err != nil {
		closeAll(conns)
		s.FirstError = err.Error()
		return s
	}
	if got := backend.Active(); got < int64(len(conns)) {
		s.FirstError = fmt.Sprintf("backend holds %d connections, want at least %d: the proxy dropped some", got, len(conns))
	}
	s.Before, s.At2s, s.After, s.PeakRSSKiB = before, at2s, after, peak
	per := func(a, b uint64, held int) float64 { return (float64(a) - float64(b)) / float64(held) }
	s.RSS2sKiBPerConn = per(at2s.RSSKiB, before.RSSKiB, len(conns))
	s.PeakRSSKiBPerConn = per(s.PeakRSSKiB, before.RSSKiB, len(conns))
	s.PssKiBPerConn = per(after.PssKiB, before.PssKiB, len(conns))
	s.RSSKiBPerConn = per(after.RSSKiB, before.RSSKiB, len(conns))
	s.FDsPerConn = (float64(after.FDs) - float64(before.FDs)) / float64(len(conns))

	// Refill: close everything, wait for the proxy to let go of every
	// upstream (the backend's count), let its memory settle, fill again.
	closeAll(conns)
	if err := waitIdleGone(ctx, backend, refillDrainTimeout); err != nil {
		s.FirstError = err.Error()
		return s
	}
	if _, err := settle(ctx, p.PID()); err != nil {
		s.FirstError = err.Error()
		return s
	}
	conns, _, firstErr, at2s, peak, err = fillIdle(ctx, p, pids, cfg, n, openTimeout)
	defer closeAll(conns)
	if err == nil && firstErr != nil {
		err = fmt.Errorf("refill: %w", firstErr)
	}
	if err != nil {
		s.FirstError = err.Error()
		return s
	}
	if len(conns) == 0 {
		return s
	}
	s.Refill, s.RefillOpened, s.RefillPeakRSSKiB = at2s, len(conns), peak
	s.RefillRSS2sKiBPerConn = per(at2s.RSSKiB, before.RSSKiB, len(conns))
	s.RefillPeakRSSKiBPerConn = per(peak, before.RSSKiB, len(conns))
	return s
}

// fillIdle opens up to n idle connections through p and samples the proxy
// 2 s after the last one opened; peak is the highest RSS seen from the
// start of the fill until then. The caller closes conns.
func fillIdle(ctx context.Context, p peer, pids []int, cfg *tls.Config, n int, openTimeout time.Duration) (conns []*tls.Conn, errs int64, firstErr error, at2s procSample, peak uint64, err error) {
	pctx, stopPeak := context.WithCancel(ctx)
	peakc := make(chan uint64, 1)
	go func() { peakc <- peakRSS(pctx, pids, peakInterval) }()
	octx, cancel := context.WithTimeout(ctx, openTimeout)
	conns, errs, firstErr = openIdle(octx, p.TLSAddr(), cfg, n, idleWorkers, idleMaxErrors)
	cancel()
	opened := time.Now()
	// The 2 s figure is what users see right after a burst; it is a fixed
	// point in time by definition, not a wait for a condition.
	select {
	case <-ctx.Done():
	case <-time.After(time.Until(opened.Add(afterFill))):
	}
	at2s, err = sampleTree(p.PID())
	stopPeak()
	peak = max(<-peakc, at2s.RSSKiB)
	return conns, errs, firstErr, at2s, peak, err
}

// waitIdleGone waits until backend holds no connection, or timeout.
func waitIdleGone(ctx context.Context, backend *server, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for backend.Active() > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("refill: backend still holds %d connections %v after the first fill was closed", backend.Active(), timeout)
		case <-tick.C:
		}
	}
	return nil
}

// peakRSS sums VmRSS over pids every interval until ctx is done and returns
// the highest sum seen.
func peakRSS(ctx context.Context, pids []int, interval time.Duration) uint64 {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var peak uint64
	for {
		var sum uint64
		for _, pid := range pids {
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
				if v, err := parseKiB(b, "VmRSS"); err == nil {
					sum += v
				}
			}
		}
		peak = max(peak, sum)
		select {
		case <-ctx.Done():
			return peak
		case <-tick.C:
		}
	}
}

// settle samples pid until its Pss stops moving (two samples 250 ms apart
// within 0.5% or 64 KiB), or settleTimeout passes, and returns the last
// sample.
func settle(ctx context.Context, pid int) (procSample, error) {
	ctx, cancel := context.WithTimeout(ctx, settleTimeout)
	defer cancel()
	prev, err := sampleTree(pid)
	if err != nil {
		return procSample{}, err
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return prev, nil
		case <-tick.C:
		}
		cur, err := sampleTree(pid)
		if err != nil {
			return procSample{}, err
		}
		diff := max(cur.PssKiB, prev.PssKiB) - min(cur.PssKiB, prev.PssKiB)
		if diff <= 64 || float64(diff) <= 0.005*float64(cur.PssKiB) {
			return cur, nil
		}
		prev = cur
	}
}
