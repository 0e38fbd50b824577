package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestAliveReportsWedgedApply blocks one Apply on the store's lock and
// checks Alive reports the wedge, then recovers once Apply returns.
func TestAliveReportsWedgedApply(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // a closed node: Alive checks only the apply loop, not raft
	n := &Node{fsm: newFSM(), ctx: ctx}
	if err := n.Alive(time.Nanosecond); err != nil {
		t.Fatalf("Alive() with no apply running = %v, want nil", err)
	}
	cmd, err := encodeCommand([]Op{Put("k", []byte("v"))})
	if err != nil {
		t.Fatal(err)
	}
	n.fsm.mu.RLock()
	done := make(chan any)
	go func() { done <- n.fsm.Apply(&raft.Log{Index: 1, Data: cmd}) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err = n.Alive(time.Millisecond)
		if err != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond) // poll interval while waiting for the condition
	}
	if !errors.Is(err, ErrWedged) {
		n.fsm.mu.RUnlock()
		t.Fatalf("Alive(1ms) with Apply blocked = %v, want ErrWedged", err)
	}
	if err := n.Alive(time.Hour); err != nil {
		t.Errorf("Alive(1h) = %v, want nil", err)
	}
	n.fsm.mu.RUnlock()
	<-done
	if err := n.Alive(time.Nanosecond); err != nil {
		t.Fatalf("Alive() after Apply returned = %v, want nil", err)
	}
}
