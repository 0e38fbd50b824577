package sni

import (
	"runtime/debug"
	"time"
)

// Giving memory back after a drain.
//
// The Go runtime sets its next collection at twice the heap it found live
// at the last one. After thousands of connections close, little is
// allocated, so no collection comes: the dead connections' memory stays
// counted as the heap, and a new burst grows the process to twice the
// old peak before anything is freed. The sweeper therefore watches the
// number of spliced connections and, when it has fallen to half of its
// high-water mark (of at least memReturnMin connections) and has stopped
// falling (one sweep later, no fewer) or reached zero, collects and returns the freed
// pages to the OS at once (debug.FreeOSMemory), at most once per
// memReturnEvery.

const (
	memReturnMin   = 1024
	memReturnEvery = 10 * time.Second
)

// memReturn decides when a drain is large enough to give memory back.
// It is used by the sweeper goroutine only.
type memReturn struct {
	peak int64     // most connections seen since the last return
	prev int64     // connections at the last observation
	last time.Time // time of the last return
}

// observe records live connections at now and says whether to return
// memory.
func (m *memReturn) observe(live int64, now time.Time) bool {
	falling := live < m.prev
	m.prev = live
	if live > m.peak {
		m.peak = live
		return false
	}
	if m.peak < memReturnMin || live > m.peak/2 || (falling && live > 0) || now.Sub(m.last) < memReturnEvery {
		return false
	}
	m.peak, m.last = live, now
	return true
}

// returnMemory collects and hands the free heap back to the OS.
var returnMemory = debug.FreeOSMemory
