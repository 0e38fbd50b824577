package sni

import (
	"errors"
	"fmt"
	"sort"
	"time"
)

// ErrWedged: an accept loop of the server has been stuck in one iteration
// for longer than the bound Alive was given.
var ErrWedged = errors.New("sni: accept loop wedged")

// Alive reports whether every running accept loop is turning: an error
// wrapping ErrWedged names each listener whose loop has been busy with one
// accepted connection (between Accept and starting its handler, normally
// microseconds) for longer than max. A loop waiting in Accept or in its
// error backoff is alive. Alive takes none of the server's locks, so a
// loop deadlocked on them is still reported. Cheap; safe for concurrent
// use (it is meant for a service manager's watchdog).
func (s *Server) Alive(max time.Duration) error {
	var stuck []string
	s.loops.Range(func(k, _ any) bool {
		l := k.(*serverListener)
		if d, ok := l.beat.Stuck(max); ok {
			stuck = append(stuck, fmt.Sprintf("%s (busy %s)", l.key, d.Round(time.Millisecond)))
		}
		return true
	})
	if len(stuck) == 0 {
		return nil
	}
	sort.Strings(stuck)
	return fmt.Errorf("%w: %v", ErrWedged, stuck)
}
