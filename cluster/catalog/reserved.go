package catalog

import (
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Reserver says whether an address is one of this node's own listeners.
// Reserved must be safe for concurrent use and fast: it is called with the
// catalog's lock held, for every endpoint received and every entry of a
// rebuilt snapshot. A Reserver whose set changes should also have a
// Generation() uint64 method that grows on every change, so snapshots are
// filtered again.
type Reserver interface {
	Reserved(addr netip.AddrPort) (listener string, ok bool)
}

// Listeners is a Reserver built from bound listener addresses. A listener
// bound to a wildcard address (0.0.0.0, ::) reserves its port on every
// address of this node: loopback, the unspecified address, and every
// interface address (read again at most every 10s). Safe for concurrent
// use; the zero value reserves nothing.
type Listeners struct {
	mu    sync.Mutex // guards named
	named map[string][]netip.AddrPort
	gen   atomic.Uint64

	localMu sync.Mutex // guards local and localAt
	local   []netip.Addr
	localAt time.Time
}

var _ Reserver = (*Listeners)(nil)

// Set replaces the addresses of listener name (e.g. "admin", "raft",
// "gossip", "ca", "proxy"). Each address is a net.Addr of a bound
// listener or a "host:port" string; unparsable ones (and names) are
// skipped. Set with no addresses removes name.
func (l *Listeners) Set(name string, addrs ...any) {
	var aps []netip.AddrPort
	for _, a := range addrs {
		var s string
		switch v := a.(type) {
		case nil:
			continue
		case net.Addr:
			s = v.String()
		case string:
			s = v
		default:
			continue
		}
		if ap, err := netip.ParseAddrPort(s); err == nil {
			aps = append(aps, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if old, ok := l.named[name]; ok == (len(aps) > 0) && slices.Equal(old, aps) {
		return // unchanged: snapshots need no new filtering
	}
	if l.named == nil {
		l.named = map[string][]netip.AddrPort{}
	}
	if len(aps) == 0 {
		delete(l.named, name)
	} else {
		l.named[name] = aps
	}
	l.gen.Add(1)
}

// Generation grows on every Set that changes the addresses.
func (l *Listeners) Generation() uint64 { return l.gen.Load() }

// Reserved reports which listener, if any, addr reaches on this node.
func (l *Listeners) Reserved(addr netip.AddrPort) (string, bool) {
	ip := addr.Addr().Unmap()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, name := range sortedKeys(l.named) {
		for _, ln := range l.named[name] {
			if ln.Port() != addr.Port() {
				continue
			}
			lip := ln.Addr()
			switch {
			case lip == ip:
				return name, true
			case ip.IsUnspecified():
				// Dialling 0.0.0.0 or :: reaches this host.
				return name, true
			case lip.IsUnspecified() && l.isLocal(ip):
				return name, true
			}
		}
	}
	return "", false
}

// isLocal reports whether ip is an address of this host.
func (l *Listeners) isLocal(ip netip.Addr) bool {
	if ip.IsLoopback() {
		return true
	}
	l.localMu.Lock()
	defer l.localMu.Unlock()
	if time.Since(l.localAt) > 10*time.Second {
		l.local = l.local[:0]
		if as, err := net.InterfaceAddrs(); err == nil {
			for _, a := range as {
				if p, err := netip.ParsePrefix(a.String()); err == nil {
					l.local = append(l.local, p.Addr().Unmap())
				}
			}
		}
		l.localAt = time.Now()
	}
	return slices.Contains(l.local, ip)
}

// reservedAddr resolves an endpoint address for the Reserver: an IP
// literal, or "localhost" (and names under .localhost), which resolve to
// loopback everywhere. Other host names are not resolved here: their
// answer could change between this check and the dial.
func reservedAddr(r Reserver, addr string) (string, bool) {
	if r == nil {
		return "", false
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", false
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return "", false
	}
	var ips []netip.Addr
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		ips = []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()}
	} else if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip.WithZone("")}
	}
	for _, ip := range ips {
		if name, ok := r.Reserved(netip.AddrPortFrom(ip, uint16(p))); ok {
			return name, true
		}
	}
	return "", false
}

// reserverGen is the Reserver's generation, 0 when it has none.
func reserverGen(r Reserver) uint64 {
	if g, ok := r.(interface{ Generation() uint64 }); ok {
		return g.Generation()
	}
	return 0
}
