// Package liveness tracks whether a loop that must keep turning (an
// accept loop, the store's apply loop) is stuck inside one iteration.
//
// A loop calls Busy when it starts work that must finish quickly and the
// returned func when it is done; waiting (in Accept, for the next log
// entry) is not busy. Stuck reports a loop that has been busy for longer
// than a bound, which is what a deadlock or a wedged handler looks like.
//
//	var b liveness.Beat
//	for {
//		c, err := ln.Accept()
//		done := b.Busy()
//		handle(c)
//		done()
//	}
package liveness

import (
	"sync/atomic"
	"time"
)

// Beat is one loop's busy marker. The zero value is idle. Safe for
// concurrent use; Busy/done pairs must not nest.
type Beat struct {
	since atomic.Int64 // unix nanoseconds the current work began; 0 = idle
}

// Busy marks the loop busy from now until the returned func is called.
func (b *Beat) Busy() func() {
	b.since.Store(time.Now().UnixNano())
	return func() { b.since.Store(0) }
}

// Stuck returns how long the loop has been busy if that exceeds max, and
// whether it does.
func (b *Beat) Stuck(max time.Duration) (time.Duration, bool) {
	s := b.since.Load()
	if s == 0 {
		return 0, false
	}
	d := time.Since(time.Unix(0, s))
	return d, d > max
}
