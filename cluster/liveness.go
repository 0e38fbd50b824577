package cluster

import (
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// ErrWedged: the store's apply loop has been stuck applying one entry (or
// restoring a snapshot) for longer than the bound Alive was given, or raft
// stopped while the node is still open.
var ErrWedged = errors.New("cluster: store apply loop wedged")

// Alive reports whether the replicated store's apply loop is turning: an
// error wrapping ErrWedged when one Apply or Restore has run for longer
// than max, or when raft has shut down under a node that was not closed.
// Waiting for the next log entry is alive. Cheap, takes no lock of the
// store; safe for concurrent use (meant for a service manager's watchdog).
func (n *Node) Alive(max time.Duration) error {
	if d, stuck := n.fsm.beat.Stuck(max); stuck {
		return fmt.Errorf("%w: one apply has run for %s", ErrWedged, d.Round(time.Millisecond))
	}
	if n.ctx.Err() == nil && n.raft.State() == raft.Shutdown {
		return fmt.Errorf("%w: raft has shut down", ErrWedged)
	}
	return nil
}
