package clustertest

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// GossipNetwork is an in-memory network of memberlist transports, built
// like memberlist's MockNetwork but fit for crash tests: it is safe for
// concurrent use, packet queues are buffered and drop when full (as UDP
// does), and a transport that is shut down or marked down stops receiving
// instead of blocking its senders. It also counts bytes sent per node, packets and streams apart.
type GossipNetwork struct {
	mu     sync.Mutex // guards byAddr, byName, port
	byAddr map[string]*GossipTransport
	byName map[string]*GossipTransport
	port   int
}

// GossipTransport is one node's memberlist.Transport on a GossipNetwork.
type GossipTransport struct {
	net     *GossipNetwork
	name    string
	addr    string
	packets chan *memberlist.Packet
	streams chan net.Conn
	down    atomic.Bool
	done    chan struct{}
	once    sync.Once
	// streamMu orders stream hand-off against Shutdown, so that no stream
	// is queued after Shutdown drained the queue (its writer would block
	// forever on the pipe).
	streamMu sync.Mutex
	closed   bool

	// SentPacketBytes counts the bytes of every packet this transport
	// sent (memberlist's UDP traffic: probes, acks, gossip).
	SentPacketBytes atomic.Uint64
	// SentStreamBytes counts the bytes written to streams this transport
	// dialed or accepted (memberlist's TCP traffic: push-pull, reliable
	// sends, fallback pings).
	SentStreamBytes atomic.Uint64
	// DroppedPackets counts packets to this transport lost to a full queue.
	DroppedPackets atomic.Uint64
}

var _ memberlist.NodeAwareTransport = (*GossipTransport)(nil)

// ErrUnreachable is returned when dialing a node that is down or unknown.
var ErrUnreachable = errors.New("clustertest: node unreachable")

// NewTransport returns a transport for the memberlist node called name.
// A new name gets a fresh address 127.0.0.1:<n>; a name whose previous
// transport was shut down gets its old address back, as a restarted
// process would.
func (n *GossipNetwork) NewTransport(name string) *GossipTransport {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.byAddr == nil {
		n.byAddr = make(map[string]*GossipTransport)
		n.byName = make(map[string]*GossipTransport)
		n.port = 20000
	}
	var addr string
	if old := n.byName[name]; old != nil && old.isShutdown() {
		addr = old.addr
	} else {
		n.port++
		addr = fmt.Sprintf("127.0.0.1:%d", n.port)
	}
	t := &GossipTransport{
		net:     n,
		name:    name,
		addr:    addr,
		packets: make(chan *memberlist.Packet, 1024),
		streams: make(chan net.Conn, 64),
		done:    make(chan struct{}),
	}
	n.byAddr[t.addr] = t
	n.byName[name] = t
	return t
}

// Addr returns the transport's address, for Join.
func (t *GossipTransport) Addr() string { return t.addr }

// SetDown cuts the node off (true) or reconnects it: while down it neither
// sends nor receives.
func (t *GossipTransport) SetDown(down bool) { t.down.Store(down) }

func (n *GossipNetwork) peer(a memberlist.Address) (*GossipTransport, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var t *GossipTransport
	if a.Name != "" {
		t = n.byName[a.Name]
	}
	if t == nil {
		t = n.byAddr[a.Addr]
	}
	if t == nil || t.down.Load() {
		return nil, fmt.Errorf("%w: %s", ErrUnreachable, a.Addr)
	}
	select {
	case <-t.done:
		return nil, fmt.Errorf("%w: %s", ErrUnreachable, a.Addr)
	default:
	}
	return t, nil
}

// FinalAdvertiseAddr implements memberlist.Transport.
func (t *GossipTransport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	host, port, _ := net.SplitHostPort(t.addr)
	var p int
	fmt.Sscan(port, &p)
	return net.ParseIP(host), p, nil
}

// WriteTo implements memberlist.Transport.
func (t *GossipTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// WriteToAddress implements memberlist.NodeAwareTransport. Like UDP, a
// packet to a node that is down or whose queue is full is lost silently.
func (t *GossipTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	now := time.Now()
	if t.down.Load() {
		return now, nil
	}
	t.SentPacketBytes.Add(uint64(len(b)))
	dst, err := t.net.peer(a)
	if err != nil {
		return now, nil
	}
	p := &memberlist.Packet{Buf: append([]byte(nil), b...), From: mockAddr(t.addr), Timestamp: now}
	select {
	case dst.packets <- p:
	default:
		dst.DroppedPackets.Add(1)
	}
	return now, nil
}

// PacketCh implements memberlist.Transport.
func (t *GossipTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

// DialTimeout implements memberlist.Transport.
func (t *GossipTransport) DialTimeout(addr string, d time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, d)
}

// DialAddressTimeout implements memberlist.NodeAwareTransport with a
// synchronous in-memory pipe.
func (t *GossipTransport) DialAddressTimeout(a memberlist.Address, d time.Duration) (net.Conn, error) {
	if t.down.Load() {
		return nil, fmt.Errorf("%w: local node down", ErrUnreachable)
	}
	dst, err := t.net.peer(a)
	if err != nil {
		return nil, err
	}
	local, remote := net.Pipe()
	rc := &pipeConn{Conn: remote, local: mockAddr(dst.addr), remote: mockAddr(t.addr), sent: &dst.SentStreamBytes, stall: d}
	if dst.offer(rc, d) {
		return &pipeConn{Conn: local, local: mockAddr(t.addr), remote: mockAddr(dst.addr), sent: &t.SentStreamBytes, stall: d}, nil
	}
	local.Close()
	remote.Close()
	return nil, fmt.Errorf("%w: %s", ErrUnreachable, a.Addr)
}

// offer queues an accepted stream for t's memberlist, waiting at most d
// for room; it fails once t is shut down.
func (t *GossipTransport) offer(c net.Conn, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		t.streamMu.Lock()
		if t.closed {
			t.streamMu.Unlock()
			return false
		}
		select {
		case t.streams <- c:
			t.streamMu.Unlock()
			return true
		default:
		}
		t.streamMu.Unlock()
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-t.done:
			return false
		case <-time.After(time.Millisecond):
		}
	}
}

// StreamCh implements memberlist.Transport.
func (t *GossipTransport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown implements memberlist.Transport: the node stops receiving and
// queued streams are closed.
func (t *GossipTransport) Shutdown() error {
	t.once.Do(func() {
		t.streamMu.Lock()
		t.closed = true
		t.streamMu.Unlock()
		close(t.done)
		for {
			select {
			case c := <-t.streams:
				c.Close()
			default:
				return
			}
		}
	})
	return nil
}

func (t *GossipTransport) isShutdown() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

type mockAddr string

func (a mockAddr) Network() string { return "mem" }
func (a mockAddr) String() string  { return string(a) }

// pipeConn gives a net.Pipe end real-looking addresses and counts writes.
// A net.Pipe write waits for the reader, where TCP would hand the bytes to
// the kernel; so that a peer that stopped reading cannot block a writer
// forever, a write without a deadline set by the user gives up after
// stall (the dial timeout).
type pipeConn struct {
	net.Conn
	local, remote net.Addr
	sent          *atomic.Uint64
	stall         time.Duration
	deadlineSet   atomic.Bool
}

func (c *pipeConn) LocalAddr() net.Addr  { return c.local }
func (c *pipeConn) RemoteAddr() net.Addr { return c.remote }

func (c *pipeConn) SetDeadline(t time.Time) error {
	c.deadlineSet.Store(true)
	return c.Conn.SetDeadline(t)
}

func (c *pipeConn) SetWriteDeadline(t time.Time) error {
	c.deadlineSet.Store(true)
	return c.Conn.SetWriteDeadline(t)
}

func (c *pipeConn) Write(b []byte) (int, error) {
	if c.stall > 0 && !c.deadlineSet.Load() {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(c.stall))
	}
	n, err := c.Conn.Write(b)
	if c.sent != nil {
		c.sent.Add(uint64(n))
	}
	return n, err
}
