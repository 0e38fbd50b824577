package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// Liveness is an optional capability of a Component: a loop the node's
// watchdog pings depend on (the store's apply loop). The data plane's
// accept loops are always checked.
type Liveness interface {
	// Alive returns nil while the component's loops turn, or why not: a
	// loop stuck in one iteration for longer than max. Called from the
	// watchdog goroutine; must be cheap and must not block on the loops'
	// own locks.
	Alive(max time.Duration) error
}

// Alive implements Liveness: the replicated store's apply loop.
func (c *Cluster) Alive(max time.Duration) error { return c.node.Alive(max) }

var _ Liveness = (*Cluster)(nil)

// SystemdConfig configures Systemd. Build it with DefaultSystemdConfig.
type SystemdConfig struct {
	// Logger receives notification failures and watchdog state changes;
	// nil discards.
	Logger *slog.Logger
	// ReadyTimeout bounds the wait for the node's readiness (the gossip
	// join, the replicated store in sync) before READY=1 is sent anyway,
	// with a STATUS= saying what is still missing, so a node whose whole
	// fleet is down still starts and serves what it has instead of being
	// restarted in a loop. Default 2 min (the same grace /readyz gives the
	// gossip join); keep the unit's TimeoutStartSec= above it.
	ReadyTimeout time.Duration
	// Poll is how often readiness is re-checked while starting. Default
	// 250 ms.
	Poll time.Duration
	// Notify sends one sd_notify message; nil means daemon.SdNotify (a
	// no-op when $NOTIFY_SOCKET is unset).
	Notify func(state string) error
	// Watchdog is the watchdog interval; 0 reads $WATCHDOG_USEC (and
	// $WATCHDOG_PID) through daemon.SdWatchdogEnabled. Pings go out every
	// Watchdog/2 while every loop is alive; a loop busy longer than
	// Watchdog/2 stops them.
	Watchdog time.Duration
}

// DefaultSystemdConfig returns the documented defaults.
func DefaultSystemdConfig() SystemdConfig {
	return SystemdConfig{ReadyTimeout: 2 * time.Minute, Poll: 250 * time.Millisecond}
}

// Systemd runs an agent under systemd's notify protocol (Type=notify):
//
//	STATUS=starting / waiting for: ...   while listeners, store and CA come up
//	READY=1 + STATUS=serving ...          once every listener is bound, the
//	                                      store is in sync and the CA is open
//	RELOADING=1 + MONOTONIC_USEC=...      on SIGHUP, then READY=1 when the
//	                                      reload has been applied or refused
//	STOPPING=1 + STATUS=draining          when ctx ends and the drain starts
//	WATCHDOG=1                            every Watchdog/2 while the accept
//	                                      loops and the store's apply loop
//	                                      are alive
//
// Outside systemd (no $NOTIFY_SOCKET) every message is a no-op and Serve
// is Run plus SIGHUP reloads.
type Systemd struct {
	cfg    SystemdConfig
	log    *slog.Logger
	notify func(string) error

	mu     sync.Mutex // guards status
	status string     // the last STATUS= sent
}

// NewSystemd returns a Systemd with cfg's zero fields defaulted.
func NewSystemd(cfg SystemdConfig) *Systemd {
	def := DefaultSystemdConfig()
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = def.ReadyTimeout
	}
	if cfg.Poll <= 0 {
		cfg.Poll = def.Poll
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	notify := cfg.Notify
	if notify == nil {
		notify = func(state string) error {
			_, err := daemon.SdNotify(false, state)
			return err
		}
	}
	if cfg.Watchdog == 0 {
		d, err := daemon.SdWatchdogEnabled(false)
		if err != nil {
			log.Warn("systemd watchdog settings unreadable; no watchdog pings", "err", err)
		}
		cfg.Watchdog = d
	}
	return &Systemd{cfg: cfg, log: log, notify: notify}
}

// Serve starts a (unless it already started), reports it to systemd as it
// comes up, runs it until ctx ends and returns Run's result. It takes over
// a's Config.Reload (SIGHUP): each receive reloads the resources between
// RELOADING=1 and READY=1. Call it instead of Run, once.
func (s *Systemd) Serve(ctx context.Context, a *Agent) error {
	hup := a.cfg.Reload
	a.cfg.Reload = nil // the watch loop (Run) no longer reloads on it
	s.setStatus("starting: binding listeners, loading resources")
	var wg sync.WaitGroup
	defer wg.Wait()
	wctx, stopWatchdog := context.WithCancel(context.Background())
	defer stopWatchdog()
	if s.cfg.Watchdog > 0 {
		wg.Go(func() { s.watchdog(wctx, a) })
	}
	if !a.ready.Load() {
		if err := a.Start(ctx); err != nil {
			s.setStatus("failed to start: " + err.Error())
			return err
		}
	}
	runErr := make(chan error, 1)
	wg.Go(func() { runErr <- a.Run(ctx) })

	if !s.waitReady(ctx, a) {
		s.send("STOPPING=1")
		s.setStatus("draining")
		return <-runErr
	}
	s.send("READY=1")
	s.setStatus(serving(a, ""))
	for {
		select {
		case <-ctx.Done():
			s.send("STOPPING=1")
			s.setStatus("draining: listeners closed, connections in flight finishing")
			return <-runErr
		case <-hup:
			s.send(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", monotonicUsec()))
			s.setStatus("reloading")
			note := ""
			if err := a.Reload(ctx); err != nil {
				note = "; last reload refused, running configuration kept: " + err.Error()
			}
			s.send("READY=1")
			s.setStatus(serving(a, note))
		}
	}
}

// waitReady polls readiness until it holds, ReadyTimeout passes (true
// either way) or ctx ends (false), saying on STATUS= what it waits for.
func (s *Systemd) waitReady(ctx context.Context, a *Agent) bool {
	deadline := time.Now().Add(s.cfg.ReadyTimeout)
	synced := map[*Cluster]bool{}
	t := time.NewTicker(s.cfg.Poll)
	defer t.Stop()
	for {
		var waiting []string
		for _, c := range a.cfg.Components {
			cl, ok := c.(*Cluster)
			if !ok || synced[cl] {
				continue
			}
			sctx, cancel := context.WithTimeout(ctx, s.cfg.Poll)
			err := cl.node.Sync(sctx)
			cancel()
			if err == nil {
				synced[cl] = true
			} else {
				waiting = append(waiting, "replicated store (raft) in sync: "+err.Error())
			}
		}
		if why := a.notReady(); why != "" {
			waiting = append(waiting, why)
		}
		if len(waiting) == 0 {
			return true
		}
		if time.Now().After(deadline) {
			s.log.Warn("ready timeout passed; serving what this node has", "waiting_for", strings.Join(waiting, "; "), "timeout", s.cfg.ReadyTimeout)
			s.setStatus("degraded, still waiting for: " + strings.Join(waiting, "; "))
			return true
		}
		s.setStatus("waiting for: " + strings.Join(waiting, "; "))
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// watchdog pings every Watchdog/2 while alive says every loop turns.
func (s *Systemd) watchdog(ctx context.Context, a *Agent) {
	period := s.cfg.Watchdog / 2
	t := time.NewTicker(period)
	defer t.Stop()
	wedged := false
	for {
		if err := s.alive(a, period); err != nil {
			if !wedged {
				s.log.Error("watchdog pings stopped: a loop is wedged; systemd will restart the node", "err", err)
				s.setStatus("wedged: " + err.Error())
			}
			wedged = true
		} else {
			if wedged {
				s.log.Warn("loops turning again; watchdog pings resumed")
			}
			wedged = false
			s.send("WATCHDOG=1")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// alive checks the data plane's accept loops and every Liveness component.
func (s *Systemd) alive(a *Agent, max time.Duration) error {
	errs := []error{a.server.Alive(max)}
	for _, c := range a.cfg.Components {
		if l, ok := c.(Liveness); ok {
			errs = append(errs, l.Alive(max))
		}
	}
	return errors.Join(errs...)
}

func (s *Systemd) setStatus(msg string) {
	s.mu.Lock()
	same := s.status == msg
	s.status = msg
	s.mu.Unlock()
	if !same {
		s.send("STATUS=" + oneLine(msg))
	}
}

func (s *Systemd) send(state string) {
	if err := s.notify(state); err != nil {
		s.log.Warn("systemd notify failed", "state", strings.SplitN(state, "\n", 2)[0], "err", err)
	}
}

// serving says what the node serves, for STATUS=.
func serving(a *Agent, note string) string {
	var ls []string
	for key, addr := range a.Listeners() {
		ls = append(ls, key+"="+addr.String())
	}
	slices.Sort(ls)
	msg := fmt.Sprintf("serving %d listeners (%s)", len(ls), strings.Join(ls, ", "))
	if ad := a.AdminAddr(); ad != nil {
		msg += ", admin " + ad.String()
	}
	for _, c := range a.cfg.Components {
		switch c := c.(type) {
		case *Cluster:
			if name, _ := c.node.Leader(); name != "" {
				msg += ", raft leader " + name
			}
		case *CA:
			msg += ", CA on"
		}
	}
	return msg + note
}

// oneLine keeps STATUS= to one line (a newline would start a new field).
func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

// monotonicUsec is CLOCK_MONOTONIC in microseconds, as RELOADING=1 wants
// it in MONOTONIC_USEC= (systemd ≥ 253 checks it against its own clock).
func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano() / 1000
}
