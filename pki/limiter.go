package pki

import (
	"container/list"
	"hash/maphash"
	"net"
	"sync"
	"time"
)

// limiterShards is the number of independently locked parts of a
// keyedLimiter.
const limiterShards = 16

// keyedLimiter is one token bucket per key (a caller, a remote address),
// in a table of bounded size: each shard keeps at most maxKeys/16 keys and
// forgets the least recently used one to make room. A forgotten key starts
// again with a full bucket, so the bound trades memory for how long an
// idle key is remembered. A nil *keyedLimiter allows everything. Safe for
// concurrent use.
type keyedLimiter struct {
	rate     float64
	burst    float64
	perShard int
	seed     maphash.Seed
	shards   [limiterShards]limiterShard
}

type limiterShard struct {
	mu  sync.Mutex // guards m and lru
	m   map[string]*list.Element
	lru list.List // of *limiterEntry, most recent first
}

type limiterEntry struct {
	key    string
	tokens float64
	last   time.Time
}

// newKeyedLimiter returns nil (no limit) when rate is 0.
func newKeyedLimiter(rate float64, burst, maxKeys int) *keyedLimiter {
	if rate <= 0 {
		return nil
	}
	l := &keyedLimiter{rate: rate, burst: float64(burst), perShard: max(maxKeys/limiterShards, 1), seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].m = map[string]*list.Element{}
	}
	return l
}

// entry returns key's bucket, refilled to now, creating it (full) if
// needed. The shard's lock must be held.
func (l *keyedLimiter) entry(sh *limiterShard, key string, now time.Time, create bool) *limiterEntry {
	if el, ok := sh.m[key]; ok {
		sh.lru.MoveToFront(el)
		e := el.Value.(*limiterEntry)
		if dt := now.Sub(e.last); dt > 0 {
			e.tokens = min(e.tokens+dt.Seconds()*l.rate, l.burst)
			e.last = now
		}
		return e
	}
	if !create {
		return nil
	}
	if sh.lru.Len() >= l.perShard {
		old := sh.lru.Back()
		sh.lru.Remove(old)
		delete(sh.m, old.Value.(*limiterEntry).key)
	}
	e := &limiterEntry{key: key, tokens: l.burst, last: now}
	sh.m[key] = sh.lru.PushFront(e)
	return e
}

func (l *keyedLimiter) shard(key string) *limiterShard {
	return &l.shards[maphash.String(l.seed, key)%limiterShards]
}

// take spends one token of key's bucket if it has one.
func (l *keyedLimiter) take(key string, now time.Time) bool {
	if l == nil {
		return true
	}
	sh := l.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := l.entry(sh, key, now, true)
	if e.tokens < 1 {
		return false
	}
	e.tokens--
	return true
}

// has says whether key's bucket holds a token, without spending it. A key
// the table does not hold has a full bucket.
func (l *keyedLimiter) has(key string, now time.Time) bool {
	if l == nil {
		return true
	}
	sh := l.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := l.entry(sh, key, now, false)
	return e == nil || e.tokens >= 1
}

// len returns the number of keys held (for tests).
func (l *keyedLimiter) len() int {
	if l == nil {
		return 0
	}
	n := 0
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		n += sh.lru.Len()
		sh.mu.Unlock()
	}
	return n
}

// remoteHost is the key of a remote address: its host without the port
// ("" stays ""; an address without a port is used whole).
func remoteHost(remote string) string {
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return remote
}
