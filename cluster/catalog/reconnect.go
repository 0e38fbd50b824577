package catalog

import (
	"math/rand/v2"
	"net"
	"strconv"
	"time"
)

// Reconnecting to failed members. memberlist never probes a member it has
// declared dead again, so a node that crashed and came back with nobody to
// join (the first node of a fleet has no join list) would stay apart from
// its peers for good. As Serf does for Consul, every node keeps trying the
// members it saw fail, a few at a time, until they answer or
// ReconnectTimeout passes. Members that left gracefully are not tried.

// reconnectBatch bounds the joins one reconnect round attempts.
const reconnectBatch = 3

// reconnect runs until Close, trying failed members every
// ReconnectInterval (with up to 25% jitter, so that the peers of a
// restarted node do not all dial it at once).
func (c *Catalog) reconnect() {
	defer c.wg.Done()
	for {
		jitter := time.Duration(rand.Int64N(int64(c.cfg.ReconnectInterval)/4 + 1))
		t := time.NewTimer(c.cfg.ReconnectInterval + jitter)
		select {
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		addrs := c.reconnectTargets(time.Now())
		if len(addrs) == 0 {
			continue
		}
		// One address per Join call: a batch join stops at the first
		// that answers, and every failed member deserves its own try.
		for _, a := range addrs {
			if c.ctx.Err() != nil {
				return
			}
			if n, err := c.ml.Join([]string{a}); n > 0 {
				c.m.reconnects.Inc()
				c.log.Info("catalog: reconnected to failed member", "peer", a)
			} else {
				c.log.Debug("catalog: failed member still unreachable", "peer", a, "err", err)
			}
		}
	}
}

// reconnectTargets picks up to reconnectBatch gossip addresses of members
// that failed less than ReconnectTimeout ago, in random order, and forgets
// those that failed before that.
func (c *Catalog) reconnectTargets(now time.Time) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var addrs []string
	for name, mi := range c.members {
		if name == c.cfg.Name || mi.status != StatusFailed {
			continue
		}
		if now.Sub(mi.since) > c.cfg.ReconnectTimeout {
			continue
		}
		if len(mi.node.Addr) == 0 || mi.node.Port == 0 {
			continue
		}
		addrs = append(addrs, net.JoinHostPort(mi.node.Addr.String(), strconv.Itoa(int(mi.node.Port))))
	}
	rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	if len(addrs) > reconnectBatch {
		addrs = addrs[:reconnectBatch]
	}
	return addrs
}
