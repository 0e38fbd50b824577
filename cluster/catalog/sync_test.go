package catalog

import (
	"log/slog"
	"testing"
	"time"
)

// A full-state request that gets no answer is repeated with backoff a
// bounded number of times; an answer stops the repeats.
func TestUnansweredSyncRequestsAreRetried(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Name = "asker"
	cfg.Network = "net-a"
	cfg.BindAddr = "127.0.0.1:0"
	cfg.Unsigned = true
	cfg.SyncInterval = 5 * time.Millisecond
	cfg.MaintenanceInterval = 2 * time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	t.Cleanup(func() { c.Close() })

	// "ghost" is alive in the view but unknown to memberlist, so every
	// request to it is dropped unsent, as a reply to an unknown requester
	// would be.
	c.mu.Lock()
	c.view.setAlive("ghost", true)
	c.enqueueLocked(job{kind: jobRequest, to: "ghost"})
	c.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c.mu.Lock()
		_, pending := c.unanswered["ghost"]
		c.mu.Unlock()
		if !pending {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("request to ghost still pending after 30s (SyncRequests = %d)", c.Stats().SyncRequests)
		}
		time.Sleep(time.Millisecond)
	}
	if got, want := c.Stats().SyncRequests, uint64(1+maxSyncRetries); got != want {
		t.Fatalf("SyncRequests after giving up on ghost = %d, want %d (1 + %d retries)", got, want, maxSyncRetries)
	}

	// An answer (any full state from the owner) clears the request.
	c.mu.Lock()
	defer c.mu.Unlock()
	c.view.setAlive("owner", true)
	c.enqueueLocked(job{kind: jobRequest, to: "owner"})
	if c.unanswered["owner"] != 1 {
		t.Fatalf("unanswered[owner] after one request = %d, want 1", c.unanswered["owner"])
	}
	st := &state{Owner: "owner", Ver: version{Inc: 1, Ctr: 1}, Eps: map[string]Endpoint{}}
	c.mergeStateLocked(st, stateBody(*st), time.Now())
	if n, ok := c.unanswered["owner"]; ok {
		t.Fatalf("unanswered[owner] after its full state arrived = %d, want no entry", n)
	}
}
