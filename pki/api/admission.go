package api

import (
	"net"
	"sync"
)

// admission counts a listener's open connections and handshakes in
// progress, in total and per remote IP address, and refuses a new
// connection that would exceed a bound (Config.MaxConns,
// MaxConnsPerRemote, MaxHandshakes, MaxHandshakesPerRemote). Its table
// holds only addresses with an open connection, so it is bounded by
// MaxConns. Safe for concurrent use.
type admission struct {
	maxConns, maxConnsPerRemote   int
	maxHandshakes, maxHSPerRemote int

	mu         sync.Mutex // guards the counts
	conns      int
	handshakes int
	remotes    map[string]*remoteCount
}

type remoteCount struct{ conns, handshakes int }

func newAdmission(cfg Config) *admission {
	return &admission{
		maxConns: cfg.MaxConns, maxConnsPerRemote: cfg.MaxConnsPerRemote,
		maxHandshakes: cfg.MaxHandshakes, maxHSPerRemote: cfg.MaxHandshakesPerRemote,
		remotes: map[string]*remoteCount{},
	}
}

// admit counts a new connection from host, with its handshake, or returns
// the refusal reason. A connection admitted must be released (release)
// once, and its handshake ended (handshakeDone) once.
func (a *admission) admit(host string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.remotes[host]
	if r == nil {
		r = &remoteCount{}
	}
	switch {
	case a.maxConns > 0 && a.conns >= a.maxConns:
		return refusedConnLimit
	case a.maxConnsPerRemote > 0 && r.conns >= a.maxConnsPerRemote:
		return refusedRemoteConnLimit
	case a.handshakes >= a.maxHandshakes:
		return refusedHandshakeLimit
	case a.maxHSPerRemote > 0 && r.handshakes >= a.maxHSPerRemote:
		return refusedRemoteHandshakes
	}
	a.conns++
	a.handshakes++
	r.conns++
	r.handshakes++
	a.remotes[host] = r
	return ""
}

// handshakeDone ends an admitted connection's handshake.
func (a *admission) handshakeDone(host string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.handshakes--
	r := a.remotes[host]
	if r.handshakes--; r.conns == 0 && r.handshakes == 0 {
		delete(a.remotes, host)
	}
}

// release ends an admitted connection.
func (a *admission) release(host string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.conns--
	r := a.remotes[host]
	if r.conns--; r.conns == 0 && r.handshakes == 0 {
		delete(a.remotes, host)
	}
}

// counts returns the open connections and handshakes in progress.
func (a *admission) counts() (conns, handshakes int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.conns, a.handshakes
}

// admittedConn releases its admission slot when closed (once).
type admittedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

// Close closes the connection and releases its slot.
func (c *admittedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// hostOf is the IP (or whole address) of a remote address.
func hostOf(addr net.Addr) string {
	if addr == nil {
		return ""
	}
	if ta, ok := addr.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	if h, _, err := net.SplitHostPort(addr.String()); err == nil {
		return h
	}
	return addr.String()
}
