package agent

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakePart is a Component that is not ready until released and whose
// loop can be wedged.
type fakePart struct {
	ready  atomic.Bool
	wedged atomic.Bool
	checks atomic.Int64 // Alive calls
}

func (*fakePart) Start(context.Context) error { return nil }
func (*fakePart) Close() error                { return nil }
func (p *fakePart) NotReady() string {
	if p.ready.Load() {
		return ""
	}
	return "fake part: not yet"
}
func (p *fakePart) Alive(time.Duration) error {
	p.checks.Add(1)
	if p.wedged.Load() {
		return errors.New("fake loop stuck")
	}
	return nil
}

// notes records sd_notify messages.
type notes struct {
	mu  sync.Mutex
	all []string
}

func (n *notes) notify(state string) error {
	n.mu.Lock()
	n.all = append(n.all, state)
	n.mu.Unlock()
	return nil
}

func (n *notes) snapshot() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.all...)
}

// wait returns the index of the first message at or after from that
// starts with prefix, failing after a deadline.
func (n *notes) wait(t *testing.T, from int, prefix string) int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		all := n.snapshot()
		for i := from; i < len(all); i++ {
			if strings.HasPrefix(all[i], prefix) {
				return i
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no notify message %q after #%d; got %q", prefix, from, all)
		}
		time.Sleep(time.Millisecond) // poll the recorder until the condition holds
	}
}

func TestSystemdNotifyLifecycle(t *testing.T) {
	part := &fakePart{}
	reload := make(chan struct{})
	cfg := DefaultConfig()
	cfg.AdminAddr = "127.0.0.1:0"
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	cfg.Reload = reload
	cfg.Components = []Component{part}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec := &notes{}
	sd := NewSystemd(SystemdConfig{Logger: cfg.Logger, Notify: rec.notify, Watchdog: 20 * time.Millisecond, Poll: 5 * time.Millisecond})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- sd.Serve(ctx, a) }()

	w := rec.wait(t, 0, "STATUS=waiting for: fake part: not yet")
	for _, m := range rec.snapshot()[:w] {
		if m == "READY=1" {
			t.Fatalf("READY=1 sent before the component was ready: %q", rec.snapshot())
		}
	}
	part.ready.Store(true)
	r := rec.wait(t, w, "READY=1")
	rec.wait(t, r, "STATUS=serving 0 listeners (), admin 127.0.0.1:")
	rec.wait(t, 0, "WATCHDOG=1")

	// A wedged loop stops the pings until it turns again.
	part.wedged.Store(true)
	wd := rec.wait(t, r, "STATUS=wedged: fake loop stuck")
	seen := part.checks.Load()
	for part.checks.Load() < seen+3 {
		time.Sleep(time.Millisecond) // wait for three more watchdog rounds
	}
	// Read the record before the loop turns again: a ping after that is due.
	for _, m := range rec.snapshot()[wd:] {
		if m == "WATCHDOG=1" {
			t.Fatalf("WATCHDOG=1 sent while a loop was wedged: %q", rec.snapshot()[wd:])
		}
	}
	part.wedged.Store(false)
	rec.wait(t, wd, "WATCHDOG=1")

	// SIGHUP (Config.Reload): RELOADING=1 with the monotonic clock, then READY=1.
	from := len(rec.snapshot())
	reload <- struct{}{}
	rl := rec.wait(t, from, "RELOADING=1\nMONOTONIC_USEC=")
	if usec := strings.TrimPrefix(rec.snapshot()[rl], "RELOADING=1\nMONOTONIC_USEC="); usec == "0" || usec == "" {
		t.Fatalf("RELOADING message %q has no monotonic time", rec.snapshot()[rl])
	}
	rec.wait(t, rl, "READY=1")

	cancel()
	rec.wait(t, rl, "STOPPING=1")
	if err := <-done; err != nil {
		t.Fatalf("Serve() = %v, want nil after a clean drain", err)
	}
}
