package catalog_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/meshgate/meshgate/cluster/catalog"
)

// memberLog records the catalog's "member ..." log lines.
type memberLog struct {
	mu    sync.Mutex
	lines []string // "msg peer=NAME"
	next  slog.Handler
}

func (l *memberLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *memberLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *memberLog) WithGroup(string) slog.Handler            { return l }
func (l *memberLog) Handle(ctx context.Context, r slog.Record) error {
	peer := ""
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "peer" {
			peer = a.Value.String()
		}
		return true
	})
	l.mu.Lock()
	l.lines = append(l.lines, r.Message+" peer="+peer)
	l.mu.Unlock()
	if l.next.Enabled(ctx, r.Level) {
		return l.next.Handle(ctx, r)
	}
	return nil
}

func (l *memberLog) has(line string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Contains(l.lines, line)
}

func (l *memberLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines)
}

// TestMemberEventsLogged: with real memberlist nodes on loopback sockets, a
// node that leaves is logged "member left" by its peers and logs no
// failure itself, nor does anyone log "member failed" for it; a node that
// stops without leaving (a crash) is logged "member failed".
func TestMemberEventsLogged(t *testing.T) {
	const n = 4
	var nodes []*catalog.Catalog
	var logs []*memberLog
	for i := range n {
		cfg := fastConfig(t, fmt.Sprintf("ev-%d", i), "net-a")
		cfg.BindAddr = "127.0.0.1:0"
		l := &memberLog{next: cfg.Logger.Handler()}
		cfg.Logger = slog.New(l)
		c, err := catalog.New(cfg)
		if err != nil {
			t.Fatalf("catalog.New(ev-%d) on 127.0.0.1:0 error = %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		nodes = append(nodes, c)
		logs = append(logs, l)
	}
	for _, c := range nodes[1:] {
		if _, err := c.Join(t.Context(), []string{nodes[0].Addr()}); err != nil {
			t.Fatalf("Join(%s) error = %v", nodes[0].Addr(), err)
		}
	}
	waitFor(t, "every node sees every member alive", func() bool {
		for _, c := range nodes {
			if alive(c) != n {
				return false
			}
		}
		return true
	})

	// ev-3 leaves gracefully.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := nodes[3].Leave(ctx); err != nil {
		t.Fatalf("Leave(ev-3) error = %v", err)
	}
	waitFor(t, "ev-0..2 log ev-3 as left", func() bool {
		for _, l := range logs[:3] {
			if !l.has("catalog: member left peer=ev-3") {
				return false
			}
		}
		return true
	})

	// ev-2 stops without leaving: its peers must see a failure.
	if err := nodes[2].Close(); err != nil {
		t.Fatalf("Close(ev-2) error = %v", err)
	}
	waitFor(t, "ev-0 and ev-1 log ev-2 as failed", func() bool {
		return logs[0].has("catalog: member failed peer=ev-2") && logs[1].has("catalog: member failed peer=ev-2")
	})

	for i, l := range logs {
		for _, line := range l.all() {
			if line == "catalog: member failed peer=ev-3" || (line == "catalog: member failed peer=ev-"+fmt.Sprint(i)) {
				t.Errorf("ev-%d logged %q; a node that left (or this node stopping) is not a failure (log %q)", i, line, l.all())
			}
		}
	}
	if got := logs[3].all(); !slices.Contains(got, "catalog: left the gossip cluster peer=") {
		t.Errorf("ev-3's own log = %q, want it to say it left", got)
	}
	for i, c := range nodes[:2] {
		if got := c.Stats().MemberFailures; got != 1 {
			t.Errorf("ev-%d MemberFailures = %d, want 1 (ev-2's crash only)", i, got)
		}
	}
	if got := nodes[3].Stats().MemberFailures; got != 0 {
		t.Errorf("ev-3 (which left) MemberFailures = %d, want 0", got)
	}
}
