package main

import (
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
	// fdReserve is what each process keeps for itself besides two fds per
	// idle connection (bench: client + backend side; proxy: both sides).
	fdReserve = 512
	// idleWorkers open the idle connections in parallel.
	idleWorkers = 16
	// idleMaxErrors stops the idle test of a peer after so many failures.
	idleMaxErrors = 100
	// quiesceTimeout bounds the wait for the backends to drop the
	// connections of the previous cell.
	quiesceTimeout = 30 * time.Second
	// settleTimeout bounds the wait for a proxy's memory to stop moving.
	settleTimeout = 5 * time.Second
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

// run measures every peer of cfg and returns what it measured. On an error
// or cancellation it returns the figures gathered so far with the error.
// Every process it started has stopped when it returns.
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
			CellSeconds: cfg.Duration.Seconds(), Rounds: cfg.Rounds, Workers: cfg.Workers, DetailAt: cfg.DetailAt, IdleConns: cfg.IdleConns,
		},
	}
	idleN := cfg.IdleConns
	if fit := int(nofile/2) - fdReserve; !cfg.SkipIdle && idleN > fit {
		idleN = max(fit, 1)
		res.Notes = append(res.Notes, fmt.Sprintf(
			"%d idle connections asked, %d used: open-file limit %d per process must hold 2 fds per connection in this process (client + backend) and in the proxy, plus %d spare",
			cfg.IdleConns, idleN, nofile, fdReserve))
		res.Settings.IdleConns = idleN
	}

	pki, err := newPKI(tlsName)
	if err != nil {
		return nil, err
	}
	tlsSrv, err := listenServer(serveTLS(pki.serverConfig()))
	if err != nil {
		return nil, err
	}
	defer tlsSrv.Close()
	rawSrv, err := listenServer(serveSink(cfg.Duration + 2*ackTimeout))
	if err != nil {
		return nil, err
	}
	defer rawSrv.Close()
	clientCfg := pki.clientConfig(tlsName)
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

	var peers []peer
	defer func() {
		for _, p := range peers {
			p.Close()
		}
	}()
	probe := func(ctx context.Context, addr string) error {
		c, _, err := exchange(ctx, addr, clientCfg)
		if err == nil {
			c.Close()
		}
		return err
	}
	for _, name := range cfg.Peers {
		pdir := filepath.Join(dir, name)
		if err := os.MkdirAll(pdir, 0o755); err != nil {
			return res, fmt.Errorf("proxybench: %w", err)
		}
		log.Info("starting peer", "peer", name)
		p, err := startPeer(ctx, name, peerEnv{
			dir: pdir, tlsBackend: tlsSrv.Addr(), rawBackend: rawSrv.Addr(), workers: cfg.Workers,
			maxConns: idleN + 256, nofile: nofile, install: cfg.Install, meshgate: cfg.MeshgateBin,
			log: log, probe: probe,
		})
		if ctx.Err() != nil {
			return res, fmt.Errorf("proxybench: starting %s: %w", name, context.Cause(ctx))
		}
		if err != nil {
			log.Warn("skipping peer", "peer", name, "err", err)
			res.Peers = append(res.Peers, peerInfo{Name: name, Skipped: err.Error()})
			continue
		}
		peers = append(peers, p)
		res.Peers = append(res.Peers, peerInfo{Name: name, Version: p.Version(), Setup: peerSetup(name, cfg.Workers)})
	}
	if len(peers) == 0 {
		return res, fmt.Errorf("proxybench: no peer could be started")
	}

	// The idle test goes first, on freshly started proxies, so that memory
	// left over from the load tests cannot hide what idle connections cost.
	if !cfg.SkipIdle {
		for _, p := range peers {
			if p.PID() == 0 {
				continue
			}
			if err := quiesce(ctx, tlsSrv, rawSrv); err != nil {
				return res, err
			}
			log.Info("idle connections", "peer", p.Name(), "conns", idleN)
			res.Idle = append(res.Idle, measureIdle(ctx, p, clientCfg, idleN, cfg.IdleOpenTimeout, tlsSrv))
			if ctx.Err() != nil {
				return res, context.Cause(ctx)
			}
		}
	}
	// Each cell is cut into rounds, and every round visits all peers in a
	// rotating order: load from outside this program then weighs on all
	// peers alike instead of on whichever ran during a burst.
	roundLen := cfg.Duration / time.Duration(cfg.Rounds)
	for _, c := range cfg.Concurrency {
		accs := make([]handshakeAcc, len(peers))
		for r := range cfg.Rounds {
			for k := range peers {
				i := (k + r) % len(peers)
				if err := quiesce(ctx, tlsSrv, rawSrv); err != nil {
					return res, err
				}
				log.Info("handshakes", "peer", peers[i].Name(), "concurrency", c, "round", r+1)
				accs[i].add(handshakeRound(ctx, peers[i], clientCfg, c, roundLen, max(1, cfg.MaxConnsPerCell/int64(cfg.Rounds))))
				if ctx.Err() != nil {
					return res, context.Cause(ctx)
				}
			}
		}
		for i, p := range peers {
			res.Handshakes = append(res.Handshakes, accs[i].cell(p, c))
		}
	}
	for _, s := range cfg.Streams {
		accs := make([]throughputRun, len(peers))
		for r := range cfg.Rounds {
			for k := range peers {
				i := (k + r) % len(peers)
				if err := quiesce(ctx, tlsSrv, rawSrv); err != nil {
					return res, err
				}
				log.Info("throughput", "peer", peers[i].Name(), "streams", s, "round", r+1)
				accs[i].add(runThroughput(ctx, peers[i].RawAddr(), hello, s, roundLen, max(1, cfg.MaxBytesPerCell/int64(cfg.Rounds*s))))
				if ctx.Err() != nil {
					return res, context.Cause(ctx)
				}
			}
		}
		for i, p := range peers {
			res.Throughput = append(res.Throughput, throughputCellOf(p.Name(), s, accs[i]))
		}
	}
	fillRatios(res)
	fillGoals(res)
	return res, nil
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

// handshakeAcc sums the rounds of one handshake cell.
type handshakeAcc struct {
	run      handshakeRun
	cpuTicks uint64
	cpuErr   error
}

// handshakeRound runs one round of a handshake cell and measures the proxy's
// CPU ticks over it (0 for direct).
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

// add folds one round into a.
func (a *handshakeAcc) add(run handshakeRun, cpuTicks uint64, cpuErr error) {
	a.run.Conns += run.Conns
	a.run.Errors += run.Errors
	if a.run.FirstErr == nil {
		a.run.FirstErr = run.FirstErr
	}
	a.run.Elapsed += run.Elapsed
	a.run.Latencies = append(a.run.Latencies, run.Latencies...)
	a.cpuTicks += cpuTicks
	if a.cpuErr == nil {
		a.cpuErr = cpuErr
	}
}

// cell turns the sums into figures 1 and 2 for peer p at concurrency conc.
func (a *handshakeAcc) cell(p peer, conc int) handshakeCell {
	slices.Sort(a.run.Latencies)
	cell := handshakeCell{
		Peer: p.Name(), Concurrency: conc, Conns: a.run.Conns, Errors: a.run.Errors,
		FirstError: errString(a.run.FirstErr), Seconds: a.run.Elapsed.Seconds(),
		P50Ms: float64(percentile(a.run.Latencies, 0.50)) / 1e6,
		P99Ms: float64(percentile(a.run.Latencies, 0.99)) / 1e6,
	}
	if cell.Seconds > 0 {
		cell.ConnsPerSec = float64(cell.Conns) / cell.Seconds
	}
	if p.PID() == 0 {
		return cell
	}
	if a.cpuErr != nil {
		if cell.FirstError == "" {
			cell.FirstError = a.cpuErr.Error()
		}
		return cell
	}
	cpu := float64(a.cpuTicks) / clockTicks
	cell.ProxyCPUSeconds = &cpu
	if cell.Conns > 0 {
		per := cpu * 1000 / float64(cell.Conns) * 1000
		cell.CPUMsPer1000 = &per
	}
	return cell
}

// add folds one round into t.
func (t *throughputRun) add(r throughputRun) {
	t.Bytes += r.Bytes
	t.Errors += r.Errors
	if t.FirstErr == nil {
		t.FirstErr = r.FirstErr
	}
	t.Elapsed += r.Elapsed
}

// throughputCellOf turns the sums of a throughput cell into figure 3.
func throughputCellOf(peer string, streams int, run throughputRun) throughputCell {
	cell := throughputCell{
		Peer: peer, Streams: streams, Bytes: run.Bytes, Errors: run.Errors,
		FirstError: errString(run.FirstErr), Seconds: run.Elapsed.Seconds(),
	}
	if cell.Seconds > 0 {
		cell.MBPerSec = float64(run.Bytes) / 1e6 / cell.Seconds
	}
	return cell
}

// measureIdle runs figure 4 for one proxy: the proxy's growth in Pss, RSS
// and fds when n idle connections pass through it, per connection.
func measureIdle(ctx context.Context, p peer, cfg *tls.Config, n int, openTimeout time.Duration, backend *server) idleCell {
	cell := idleCell{Peer: p.Name(), Requested: n}
	before, err := settle(ctx, p.PID())
	if err != nil {
		cell.FirstError = err.Error()
		return cell
	}
	octx, cancel := context.WithTimeout(ctx, openTimeout)
	conns, errs, firstErr := openIdle(octx, p.TLSAddr(), cfg, n, idleWorkers, idleMaxErrors)
	cancel()
	defer closeAll(conns)
	cell.Opened, cell.Errors, cell.FirstError = len(conns), errs, errString(firstErr)
	if len(conns) == 0 {
		return cell
	}
	after, err := settle(ctx, p.PID())
	if err != nil {
		cell.FirstError = err.Error()
		return cell
	}
	if got := backend.Active(); got < int64(len(conns)) {
		cell.FirstError = fmt.Sprintf("backend holds %d connections, want at least %d: the proxy dropped some", got, len(conns))
	}
	cell.Before, cell.After = before, after
	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(len(conns)) }
	cell.PssKiBPerConn = per(after.PssKiB, before.PssKiB)
	cell.RSSKiBPerConn = per(after.RSSKiB, before.RSSKiB)
	cell.FDsPerConn = (float64(after.FDs) - float64(before.FDs)) / float64(len(conns))
	return cell
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
