package sni

import "hash/maphash"

// tableShardCount is the number of shards of a tableShardMap. At 100,000
// services a shard holds about 400 of them, so copying one on a change
// costs microseconds.
const tableShardCount = 256

// tableShardSeed places hosts in shards; one seed for the process.
var tableShardSeed = maphash.MakeSeed()

// tableShardOf returns the shard of a service host. Every key of one host
// lives in the same shard, so a change to one service copies one shard
// of each map.
func tableShardOf(host string) int {
	return int(maphash.String(tableShardSeed, host) % tableShardCount)
}

// tableShardMap is a map split into shards by service host, shared
// copy-on-write between tables: a table derived from another by an
// endpoint change copies the shard array (pointers) and only the shards
// it writes. A published map is never written.
type tableShardMap[K comparable, V any] struct {
	shards [tableShardCount]map[K]V
	n      int
	// owned marks the shards this map may write (its own copies); only
	// the builder reads it, under Builder.mu.
	owned [tableShardCount / 64]uint64
}

// newTableShardMap returns an empty map sized for about n entries.
func newTableShardMap[K comparable, V any](n int) *tableShardMap[K, V] {
	m := &tableShardMap[K, V]{}
	for i := range m.shards {
		m.shards[i] = make(map[K]V, n/tableShardCount)
		m.owned[i/64] |= 1 << (i % 64)
	}
	return m
}

// get looks k up in the shard of host. It does not allocate.
func (m *tableShardMap[K, V]) get(host string, k K) (V, bool) {
	v, ok := m.shards[tableShardOf(host)][k]
	return v, ok
}

// len returns the number of entries.
func (m *tableShardMap[K, V]) len() int { return m.n }

// derive returns a map sharing every shard with m, writable through
// set and del (which copy a shard on its first write).
func (m *tableShardMap[K, V]) derive() *tableShardMap[K, V] {
	d := &tableShardMap[K, V]{shards: m.shards, n: m.n}
	return d
}

// shard returns the writable shard of host.
func (m *tableShardMap[K, V]) shard(host string) map[K]V {
	i := tableShardOf(host)
	if m.owned[i/64]&(1<<(i%64)) == 0 {
		old := m.shards[i]
		cp := make(map[K]V, len(old)+1)
		for k, v := range old {
			cp[k] = v
		}
		m.shards[i] = cp
		m.owned[i/64] |= 1 << (i % 64)
	}
	return m.shards[i]
}

// set stores v under k in the shard of host.
func (m *tableShardMap[K, V]) set(host string, k K, v V) {
	s := m.shard(host)
	if _, ok := s[k]; !ok {
		m.n++
	}
	s[k] = v
}

// delWhere deletes every entry of host's shard for which drop is true.
func (m *tableShardMap[K, V]) delWhere(host string, drop func(K) bool) {
	s := m.shard(host)
	for k := range s {
		if drop(k) {
			delete(s, k)
			m.n--
		}
	}
}

// all calls f for every entry, in no particular order.
func (m *tableShardMap[K, V]) all(f func(K, V)) { m.allIn(0, 1, f) }

// allIn calls f for every entry of shards from, from+step, from+2*step...
// Calls for disjoint sets of shards may run concurrently.
func (m *tableShardMap[K, V]) allIn(from, step int, f func(K, V)) {
	for i := from; i < tableShardCount; i += step {
		for k, v := range m.shards[i] {
			f(k, v)
		}
	}
}
