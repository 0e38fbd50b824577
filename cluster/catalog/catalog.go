package catalog

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Status is a member's state as this node sees it.
type Status string

// Member states.
const (
	StatusAlive  Status = "alive"
	StatusFailed Status = "failed" // declared dead by gossip without a leave intent
	StatusLeft   Status = "left"   // departed after announcing it
)

// Member is one node of the gossip cluster.
type Member struct {
	Name   string
	Addr   string // gossip "host:port"
	Meta   Meta
	Status Status
	// Since is when this node last saw Status change.
	Since time.Time
	// Trusted says the member proved a fleet node identity: its latest
	// state carried a chain the Verifier accepted and a signature made
	// with that chain's key. An untrusted member contributes nothing: no
	// endpoint, no gateway address. This node and every member of a
	// catalog with signing off are trusted.
	Trusted bool
	// TrustReason says why a member is not trusted ("" when it is).
	TrustReason string
}

// Entry is one endpoint in a catalog snapshot.
type Entry struct {
	// Owner is the node that registered the endpoint and vouches for it.
	Owner string
	// ID is the registration ID, unique per owner.
	ID string
	// Endpoint's Network is always set: an endpoint registered without one
	// carries its owner's network.
	Endpoint
}

// Snapshot is an immutable view of the catalog: every endpoint of every
// live owner, and every member. Share it freely; never modify it.
type Snapshot struct {
	// Entries is sorted by Service, Port, Network, Addr, Owner, ID.
	Entries []Entry
	// Members is sorted by Name and includes this node.
	Members []Member
}

// Lookup returns the entries of one service port.
func (s *Snapshot) Lookup(service string, port uint32) []Entry {
	i, _ := slices.BinarySearchFunc(s.Entries, Entry{Endpoint: Endpoint{Service: service, Port: port}}, func(e, t Entry) int {
		return cmp.Or(strings.Compare(e.Service, t.Service), cmp.Compare(e.Port, t.Port))
	})
	j := i
	for j < len(s.Entries) && s.Entries[j].Service == service && s.Entries[j].Port == port {
		j++
	}
	return s.Entries[i:j:j]
}

// Catalog is a node's membership in the gossip cluster and its view of the
// endpoint catalog. All methods are safe for concurrent use.
type Catalog struct {
	cfg     Config
	log     *slog.Logger
	m       *metrics
	ml      *memberlist.Memberlist
	keyring *memberlist.Keyring
	q       *memberlist.TransmitLimitedQueue
	addr    string // advertised gossip address

	numNodes atomic.Int32 // alive members, for the broadcast queue

	// fileMu serializes changes of own registrations with their files in
	// StateDir; taken before mu, never while holding it.
	fileMu sync.Mutex

	mu       sync.Mutex // guards everything below
	meta     Meta
	view     *view
	own      ownState
	members  map[string]*memberInfo
	lastSync map[string]time.Time
	// unanswered counts full-state requests sent to an owner since its
	// last full state arrived; tick repeats them with backoff, because a
	// request or its reply can be lost (a reply to a node the owner does
	// not know yet is never sent).
	unanswered map[string]int
	lastGC     time.Time // last tombstone collection
	// trust is what this node knows of each alive member's identity;
	// probed marks members asked for their state to learn it.
	trust  map[string]*ownerTrust
	probed map[string]bool
	// reservedGen is the Reserver generation snapEntries was filtered with.
	reservedGen uint64
	leaving     bool
	snap        *Snapshot // nil when stale
	// snapEntries and snapMembers are the parts of the last snapshot,
	// each nil when stale, so that a membership change does not re-sort
	// every endpoint and an endpoint change does not rebuild the members.
	snapEntries []Entry
	snapMembers []Member

	// chg records which services changed, for Changes; ownIdx lists
	// the published own registrations by service and ownSvc the
	// service each is published under.
	chg    changeLog
	ownIdx map[string][]string
	ownSvc map[string]string

	changed  chan struct{} // endpoints changed (buffer 1)
	memberCh chan struct{} // membership or meta changed (buffer 1)
	work     chan job
	checks   chan struct{} // semaphore of running health checks

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed sync.Once
}

type memberInfo struct {
	node   memberlist.Node // a copy: memberlist mutates its own under its lock
	meta   Meta
	status Status
	since  time.Time
}

// ownState is what this node owns and publishes.
type ownState struct {
	ver  version
	regs map[string]*reg
	pub  map[string]bool // IDs currently published
}

// reg is one registration and its health.
type reg struct {
	Registration
	expires   time.Time // zero = no TTL
	healthy   bool
	fails     int
	checkedAt time.Time // end of the last check; zero before the first
	checkErr  string    // the last check's error; "" when it passed
	nextCheck time.Time
	checking  bool
	published bool
}

type jobKind int

const (
	jobSendState jobKind = iota // send our full state to a node
	jobRequest                  // ask an owner for its full state
	jobMeta                     // re-announce our meta (FlagEndpoints changed)
)

type job struct {
	kind jobKind
	to   string
}

// New starts a catalog: it opens the gossip transport and creates the
// memberlist. Call Join to meet peers and Close (or Leave) to stop.
func New(cfg Config) (*Catalog, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = discardLogger()
	}
	if cfg.Incarnation == 0 {
		cfg.Incarnation = uint64(time.Now().UnixNano())
	}
	if err := checkSigner(cfg, log); err != nil {
		return nil, err
	}
	c := &Catalog{
		cfg: cfg,
		log: log.With("node", cfg.Name),
		m:   newMetrics(cfg.Registerer),
		meta: Meta{ProtocolVersion: ProtocolVersion, ClusterID: cfg.ClusterID, Network: cfg.Network,
			GatewayAddr: cfg.GatewayAddr, BridgeAddr: cfg.BridgeAddr, RaftAddr: cfg.RaftAddr, LabelsDigest: LabelsDigest(cfg.Labels)},
		view:       newView(cfg.Name),
		own:        ownState{ver: version{Inc: cfg.Incarnation}, regs: make(map[string]*reg), pub: make(map[string]bool)},
		members:    make(map[string]*memberInfo),
		lastSync:   make(map[string]time.Time),
		unanswered: make(map[string]int),
		trust:      make(map[string]*ownerTrust),
		probed:     make(map[string]bool),
		changed:    make(chan struct{}, 1),
		memberCh:   make(chan struct{}, 1),
		work:       make(chan job, 256),
		checks:     make(chan struct{}, cfg.MaxChecks),
		chg:        newChangeLog(),
		ownIdx:     make(map[string][]string),
		ownSvc:     make(map[string]string),
	}
	c.view.touch = c.chg.note
	if cfg.GatewayAddr != "" {
		gw, err := ResolveAddr(cfg.GatewayAddr)
		if err != nil {
			return nil, fmt.Errorf("catalog: GatewayAddr: %w", err)
		}
		c.meta.GatewayAddr = gw
	}
	if cfg.BridgeAddr != "" {
		br, err := ResolveAddr(cfg.BridgeAddr)
		if err != nil {
			return nil, fmt.Errorf("catalog: BridgeAddr: %w", err)
		}
		c.meta.BridgeAddr = br
	}
	c.q = &memberlist.TransmitLimitedQueue{
		NumNodes:       func() int { return max(1, int(c.numNodes.Load())) },
		RetransmitMult: cfg.RetransmitMult,
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	mlc, err := c.memberlistConfig()
	if err != nil {
		c.cancel()
		return nil, err
	}
	ip, port, err := mlc.Transport.FinalAdvertiseAddr(mlc.AdvertiseAddr, mlc.AdvertisePort)
	if err != nil {
		c.cancel()
		_ = mlc.Transport.Shutdown()
		return nil, fmt.Errorf("catalog: advertise address: %w", err)
	}
	c.addr = net.JoinHostPort(ip.String(), strconv.Itoa(port))
	ml, err := memberlist.Create(mlc)
	if err != nil {
		c.cancel()
		if mlc.Transport != nil {
			_ = mlc.Transport.Shutdown()
		}
		return nil, fmt.Errorf("catalog: start gossip: %w", err)
	}
	c.ml = ml
	c.wg.Add(2)
	go c.worker()
	go c.maintain()
	if cfg.ReconnectInterval > 0 {
		c.wg.Add(1)
		go c.reconnect()
	}
	if cfg.StateDir != "" {
		c.restore(time.Now())
	}
	return c, nil
}

func (c *Catalog) memberlistConfig() (*memberlist.Config, error) {
	cfg := c.cfg
	mlc := memberlist.DefaultLANConfig()
	mlc.Name = cfg.Name
	mlc.GossipInterval = cfg.GossipInterval
	mlc.GossipNodes = cfg.GossipNodes
	mlc.ProbeInterval = cfg.ProbeInterval
	mlc.ProbeTimeout = cfg.ProbeTimeout
	mlc.SuspicionMult = cfg.SuspicionMult
	mlc.RetransmitMult = cfg.RetransmitMult
	mlc.PushPullInterval = cfg.PushPullInterval
	mlc.TCPTimeout = cfg.TCPTimeout
	mlc.GossipToTheDeadTime = cfg.GossipToTheDeadTime
	mlc.EnableCompression = !cfg.DisableCompression
	// memberlist's timers may still log after Shutdown returns; the gate
	// drops those lines once the catalog is closed.
	mlc.Logger = log.New(gatedWriter{ctx: c.ctx, w: LogWriter{Logger: c.log.With("component", "memberlist")}}, "", 0)
	mlc.Delegate = (*delegate)(c)
	mlc.Events = (*events)(c)
	mlc.Alive = (*events)(c)
	mlc.DeadNodeReclaimTime = 30 * time.Second // a restarted node may come back at a new address

	var tr memberlist.NodeAwareTransport = cfg.Transport
	if tr == nil {
		bind, err := ResolveAddr(cfg.BindAddr)
		if err != nil {
			return nil, fmt.Errorf("catalog: BindAddr: %w", err)
		}
		host, port, _ := net.SplitHostPort(bind)
		p, _ := strconv.Atoi(port)
		nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{host},
			BindPort:  p,
			Logger:    mlc.Logger,
		})
		if err != nil {
			return nil, fmt.Errorf("catalog: gossip listener %s: %w", bind, err)
		}
		tr = nt
		mlc.BindAddr, mlc.BindPort = host, nt.GetAutoBindPort()
	}
	if cfg.AdvertiseAddr != "" {
		adv, err := ResolveAddr(cfg.AdvertiseAddr)
		if err != nil {
			_ = tr.Shutdown()
			return nil, fmt.Errorf("catalog: AdvertiseAddr: %w", err)
		}
		host, port, _ := net.SplitHostPort(adv)
		mlc.AdvertiseAddr = host
		mlc.AdvertisePort, _ = strconv.Atoi(port)
	} else {
		mlc.AdvertisePort = mlc.BindPort
	}
	if len(cfg.Keys) > 0 {
		kr, err := memberlist.NewKeyring(cfg.Keys[1:], cfg.Keys[0])
		if err != nil {
			_ = tr.Shutdown()
			return nil, fmt.Errorf("%w: %w", ErrKey, err)
		}
		c.keyring = kr
		mlc.Keyring = kr
		mlc.GossipVerifyIncoming = true
		mlc.GossipVerifyOutgoing = true
		tr = newVerifyingTransport(tr, kr, c.m)
	}
	mlc.Transport = tr
	return mlc, nil
}

// Name returns the node's name.
func (c *Catalog) Name() string { return c.cfg.Name }

// Network returns the node's network.
func (c *Catalog) Network() string { return c.cfg.Network }

// Addr returns the gossip address peers use to reach this node.
func (c *Catalog) Addr() string { return c.addr }

// Keyring returns the gossip keyring, or nil when gossip is not encrypted.
func (c *Catalog) Keyring() *Keyring {
	if c.keyring == nil {
		return nil
	}
	return &Keyring{kr: c.keyring}
}

// Stats returns the catalog's counters.
func (c *Catalog) Stats() Stats { return c.m.stats() }

// QueuedBroadcasts returns how many catalog messages wait in the gossip
// queue for (re)transmission.
func (c *Catalog) QueuedBroadcasts() int { return c.q.NumQueued() }

// Changed returns a channel that receives (buffer 1, never blocks the
// catalog) after the set of endpoints changes. Read Snapshot after it fires.
func (c *Catalog) Changed() <-chan struct{} { return c.changed }

// MembersChanged returns a channel that receives (buffer 1) after a member
// joins, fails, leaves or changes its meta.
func (c *Catalog) MembersChanged() <-chan struct{} { return c.memberCh }

// Join contacts the given gossip addresses ("host:port", templates allowed)
// and retries with exponential backoff (250ms doubling to 5s) until at
// least one answers or ctx ends. It returns how many were contacted.
func (c *Catalog) Join(ctx context.Context, addrs []string) (int, error) {
	if len(addrs) == 0 {
		return 0, nil
	}
	resolved := make([]string, 0, len(addrs))
	for _, a := range addrs {
		r, err := ResolveAddr(a)
		if err != nil {
			return 0, fmt.Errorf("catalog: join address: %w", err)
		}
		// Joining oneself "succeeds" without meeting anyone; a join list
		// shared by every node of a fleet names each node too.
		if r != c.addr {
			resolved = append(resolved, r)
		}
	}
	if len(resolved) == 0 {
		return 0, nil
	}
	delay := 250 * time.Millisecond
	for {
		if c.ctx.Err() != nil {
			return 0, ErrClosed
		}
		n, err := c.ml.Join(resolved)
		if n > 0 {
			c.mu.Lock()
			if len(c.own.pub) > 0 {
				// A meta change (FlagEndpoints) announced while the join
				// was under way can miss the peers; announce it again now
				// that they are known.
				c.enqueueLocked(job{kind: jobMeta})
			}
			c.mu.Unlock()
			return n, nil
		}
		c.log.Info("catalog: join failed, retrying", "peers", resolved, "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("%w: %v: %w", ErrJoin, err, ctx.Err())
		case <-c.ctx.Done():
			return 0, ErrClosed
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// Members returns every member this node knows of, itself included,
// sorted by name.
func (c *Catalog) Members() []Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.membersLocked()
}

func (c *Catalog) membersLocked() []Member {
	out := make([]Member, 0, len(c.members))
	for _, name := range sortedKeys(c.members) {
		mi := c.members[name]
		trusted, reason := c.trustOf(name)
		out = append(out, Member{
			Name:        name,
			Addr:        net.JoinHostPort(mi.node.Addr.String(), strconv.Itoa(int(mi.node.Port))),
			Meta:        mi.meta,
			Status:      mi.status,
			Since:       mi.since,
			Trusted:     trusted,
			TrustReason: reason,
		})
	}
	return out
}

// Meta returns the node's current meta.
func (c *Catalog) Meta() Meta {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.meta
}

// UpdateMeta changes the node's meta with fn and queues it for gossip; it
// does not wait for delivery. The update is refused if it would exceed
// 512 bytes.
func (c *Catalog) UpdateMeta(fn func(*Meta)) error {
	c.mu.Lock()
	m := c.meta
	fn(&m)
	m.ProtocolVersion = ProtocolVersion
	if _, err := m.Encode(); err != nil {
		c.mu.Unlock()
		return err
	}
	if m == c.meta {
		c.mu.Unlock()
		return nil
	}
	c.meta = m
	c.mu.Unlock()
	if c.ctx.Err() != nil {
		return ErrClosed
	}
	// memberlist queues the alive broadcast at once; with a 1ns timeout it
	// then reports only that it did not wait for delivery (0 would wait
	// forever). The meta size, its one real failure, was checked above.
	_ = c.ml.UpdateNode(time.Nanosecond)
	return nil
}

// Register adds or replaces one of this node's endpoints and gossips the
// change. Registering the same ID again with the same endpoint refreshes
// its TTL without gossip. With a Check, the endpoint is published only
// after the first check passes.
func (c *Catalog) Register(r Registration) error {
	if err := r.Validate(); err != nil {
		return err
	}
	if name, ok := reservedAddr(c.cfg.Reserved, r.Addr); ok {
		return &EndpointError{ID: r.ID, Field: "addr", Reason: fmt.Sprintf("%s is this node's %s listener", r.Addr, name), reserved: true}
	}
	r.Endpoint = r.Endpoint.clone()
	if r.Check != nil {
		chk := *r.Check
		r.Check = &chk
	}
	c.fileMu.Lock()
	defer c.fileMu.Unlock()
	now := time.Now()
	nr := &reg{Registration: r, healthy: r.Check == nil}
	if r.TTL > 0 {
		nr.expires = now.Add(r.TTL)
	}
	c.mu.Lock()
	err := c.admitLocked(r.ID)
	c.mu.Unlock()
	if err != nil {
		return err
	}
	// On disk first: a registration that could not be kept is refused.
	if err := c.persist(r.ID, &stateFile{Version: stateFileVersion, Registration: r, Expires: nr.expires}); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.admitLocked(r.ID); err != nil {
		return err
	}
	old := c.own.regs[r.ID]
	if old != nil && old.Endpoint.Equal(r.Endpoint) && sameCheck(old.Check, r.Check) {
		// A refresh: keep health state, extend the lease.
		old.TTL, old.expires = r.TTL, nr.expires
		return nil
	}
	c.own.regs[r.ID] = nr
	if old != nil && old.published && !nr.healthy {
		c.publishLocked(r.ID, old, false)
	}
	if nr.healthy {
		c.publishLocked(r.ID, nr, true)
	}
	return nil
}

// admitLocked says whether registration id may be added or replaced now.
func (c *Catalog) admitLocked(id string) error {
	if c.ctx.Err() != nil || c.leaving {
		return ErrClosed
	}
	if c.own.regs[id] == nil && len(c.own.regs) >= c.cfg.MaxEndpoints {
		return fmt.Errorf("%w: limit %d", ErrTooMany, c.cfg.MaxEndpoints)
	}
	return nil
}

func sameCheck(a, b *Check) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// Deregister removes one of this node's endpoints and gossips the removal.
func (c *Catalog) Deregister(id string) error {
	c.fileMu.Lock()
	defer c.fileMu.Unlock()
	c.mu.Lock()
	known := c.own.regs[id] != nil
	c.mu.Unlock()
	if !known {
		return fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	if err := c.persist(id, nil); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.own.regs[id]
	if r == nil {
		return fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	delete(c.own.regs, id)
	if r.published {
		c.publishLocked(id, r, false)
	}
	return nil
}

// Registrations returns this node's registrations, sorted by ID, with
// whether each is currently published (healthy).
func (c *Catalog) Registrations() []RegistrationStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]RegistrationStatus, 0, len(c.own.regs))
	for _, id := range sortedKeys(c.own.regs) {
		r := c.own.regs[id]
		rs := RegistrationStatus{Registration: r.Registration, Healthy: r.published, Expires: r.expires,
			LastCheck: r.checkedAt, LastCheckError: r.checkErr, CheckFailures: r.fails}
		rs.Endpoint = rs.Endpoint.clone()
		out = append(out, rs)
	}
	return out
}

// RegistrationStatus is a registration and its health at the owner.
type RegistrationStatus struct {
	Registration
	// Healthy says the endpoint is published (its check, if any, passes).
	Healthy bool `json:"healthy"`
	// Expires is when the TTL lease ends unless refreshed; zero without TTL.
	Expires time.Time `json:"expires,omitzero"`
	// LastCheck is when the last TCP check ended; zero without a check or
	// before its first run.
	LastCheck time.Time `json:"last_check,omitzero"`
	// LastCheckError is the last check's error; "" when it passed.
	LastCheckError string `json:"last_check_error,omitempty"`
	// CheckFailures counts the consecutive failed checks.
	CheckFailures int `json:"check_failures,omitempty"`
}

// publishLocked gossips a put (on=true) or delete of one own endpoint.
func (c *Catalog) publishLocked(id string, r *reg, on bool) {
	c.own.ver.Ctr++
	r.published = on
	had := len(c.own.pub) > 0
	if on {
		c.own.pub[id] = true
	} else {
		delete(c.own.pub, id)
	}
	if had != (len(c.own.pub) > 0) {
		c.enqueueLocked(job{kind: jobMeta})
	}
	c.ownPublishedLocked(id, r.Service, on)
	c.endpointsChangedLocked()
	if c.numNodes.Load() <= 1 {
		// Alone there is nobody to tell. A peer met later gets the full
		// state (push-pull at join, a fetch when it sees FlagEndpoints, or
		// the send on meeting a first peer in NotifyJoin); a queued delta
		// would instead be relayed by every node of the cluster joined,
		// which for a node starting with many endpoints floods gossip.
		return
	}
	d := delta{Owner: c.cfg.Name, Ver: c.own.ver, ID: id, Delete: !on}
	if on {
		d.Ep = r.Endpoint
	}
	d.Seal = c.sealLocked(deltaBody(d), false)
	c.queue("d/"+c.cfg.Name+"/"+id, encodeDelta(d), nil)
	c.m.deltasSent.Add(1)
	c.m.deltas.WithLabelValues("own").Inc()
}

func (c *Catalog) queue(name string, msg []byte, done chan struct{}) {
	c.q.QueueBroadcast(&broadcast{name: name, msg: msg, done: done})
}

// markChangedLocked invalidates the snapshot after a change that may
// touch any service, and signals Changed.
func (c *Catalog) markChangedLocked() {
	c.chg.all()
	c.endpointsChangedLocked()
}

// endpointsChangedLocked invalidates the snapshot and signals Changed
// after a change whose services are already in the change log.
func (c *Catalog) endpointsChangedLocked() {
	c.snap, c.snapEntries = nil, nil
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *Catalog) markMembersLocked() {
	c.snap, c.snapMembers = nil, nil
	select {
	case c.memberCh <- struct{}{}:
	default:
	}
}

// Snapshot returns the current immutable view. It is rebuilt only after a
// change, so calling it often is cheap.
func (c *Catalog) Snapshot() *Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	// This node's listeners changed: filter the entries again.
	c.checkReservedLocked()
	if c.snap != nil {
		return c.snap
	}
	if c.snapMembers == nil {
		c.snapMembers = c.membersLocked()
	}
	if c.snapEntries == nil {
		c.snapEntries = c.entriesLocked()
		c.m.endpoints.Set(float64(len(c.snapEntries)))
	}
	c.snap = &Snapshot{Entries: c.snapEntries, Members: c.snapMembers}
	return c.snap
}

// entriesLocked builds the sorted endpoint list of a snapshot; it is never
// nil, so an empty catalog is cached too.
func (c *Catalog) entriesLocked() []Entry {
	out := []Entry{}
	netOf := func(owner string) string {
		if mi := c.members[owner]; mi != nil {
			return mi.meta.Network
		}
		return ""
	}
	reserved := func(addr string) bool {
		_, ok := reservedAddr(c.cfg.Reserved, addr)
		return ok
	}
	for _, id := range sortedKeys(c.own.regs) {
		if r := c.own.regs[id]; r.published && !c.leaving && !reserved(r.Addr) {
			e := Entry{Owner: c.cfg.Name, ID: id, Endpoint: r.Endpoint.clone()}
			if e.Network == "" {
				e.Network = c.cfg.Network
			}
			out = append(out, e)
		}
	}
	for owner := range c.view.owners {
		if !c.view.alive[owner] {
			continue
		}
		if c.cfg.Verifier != nil && !c.trust[owner].trusted() {
			continue // defensive: an untrusted owner has no entries
		}
		for id, ep := range c.view.visibleOf(owner) {
			if reserved(ep.Addr) {
				continue // a listener bound after the endpoint arrived
			}
			e := Entry{Owner: owner, ID: id, Endpoint: ep.clone()}
			if e.Network == "" {
				e.Network = netOf(owner)
			}
			out = append(out, e)
		}
	}
	slices.SortFunc(out, compareEntries)
	return out
}

func compareEntries(a, b Entry) int {
	return cmp.Or(
		strings.Compare(a.Service, b.Service),
		cmp.Compare(a.Port, b.Port),
		strings.Compare(a.Network, b.Network),
		strings.Compare(a.Addr, b.Addr),
		strings.Compare(a.Owner, b.Owner),
		strings.Compare(a.ID, b.ID),
	)
}

// Leave withdraws this node's endpoints, tells every peer it is leaving
// (so they can tell a drain from a crash), leaves the gossip cluster and
// stops. It waits for the leave intent to be gossiped or for ctx.
func (c *Catalog) Leave(ctx context.Context) error {
	c.mu.Lock()
	if c.leaving || c.ctx.Err() != nil {
		c.mu.Unlock()
		return c.Close()
	}
	c.leaving = true
	c.own.ver.Ctr++
	done := make(chan struct{})
	l := leaveIntent{Owner: c.cfg.Name, Ver: c.own.ver}
	l.Seal = c.sealLocked(leaveBody(l), false)
	c.queue("l/"+c.cfg.Name, encodeLeave(l), done)
	c.markChangedLocked()
	c.mu.Unlock()

	select {
	case <-done:
	case <-ctx.Done():
	case <-time.After(5 * c.cfg.GossipInterval * time.Duration(c.cfg.RetransmitMult)):
	}
	timeout := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(dl), 100*time.Millisecond)
	}
	var err error
	if lerr := c.ml.Leave(timeout); lerr != nil {
		err = fmt.Errorf("catalog: leave: %w", lerr)
	}
	return errors.Join(err, c.Close())
}

// Close stops gossip without a leave: peers see this node fail. It is
// idempotent and returns after every goroutine has stopped.
func (c *Catalog) Close() error {
	var err error
	c.closed.Do(func() {
		c.cancel()
		if serr := c.ml.Shutdown(); serr != nil {
			err = fmt.Errorf("catalog: shutdown: %w", serr)
		}
		c.wg.Wait()
	})
	return err
}

// worker runs sync work off memberlist's goroutines: full-state requests
// and replies go over TCP (SendReliable) and may block.
func (c *Catalog) worker() {
	defer c.wg.Done()
	for {
		select {
		case <-c.ctx.Done():
			return
		case j := <-c.work:
			if j.kind == jobMeta {
				_ = c.ml.UpdateNode(time.Nanosecond) // queued; see UpdateMeta
				continue
			}
			c.mu.Lock()
			mi := c.members[j.to]
			var node memberlist.Node
			if mi != nil && mi.status == StatusAlive {
				node = mi.node
			}
			var msg []byte
			switch j.kind {
			case jobSendState:
				msg = c.ownStateLocked(false)
			case jobRequest:
				msg = encodeSyncReq(c.cfg.Name)
			}
			c.mu.Unlock()
			if node.Name == "" {
				continue
			}
			if err := c.ml.SendReliable(&node, msg); err != nil {
				c.log.Debug("catalog: sync send failed", "peer", j.to, "err", err)
			}
		}
	}
}

// enqueueLocked adds sync work, dropping it when the queue is full (the
// next push-pull repairs what it would have).
func (c *Catalog) enqueueLocked(j job) {
	if j.kind == jobRequest {
		now := time.Now()
		if last, ok := c.lastSync[j.to]; ok && now.Sub(last) < c.cfg.SyncInterval {
			return
		}
		c.lastSync[j.to] = now
		c.unanswered[j.to]++
		c.m.syncRequests.Add(1)
		c.m.syncs.Inc()
	}
	select {
	case c.work <- j:
	default:
		c.m.drop(DropQueueFull)
	}
}

// ownStateLocked is this node's full state (and optionally its digest),
// encoded and signed with its chain.
func (c *Catalog) ownStateLocked(withDigest bool) []byte {
	s := c.localStateLocked(withDigest)
	body := stateBody(s)
	return appendChainSeal(body, c.sealLocked(body, true))
}

// localStateLocked is this node's full state plus (optionally) its digest.
func (c *Catalog) localStateLocked(withDigest bool) state {
	s := state{Owner: c.cfg.Name, Ver: c.own.ver, Eps: make(map[string]Endpoint)}
	if !c.leaving {
		for id, r := range c.own.regs {
			if r.published {
				s.Eps[id] = r.Endpoint
			}
		}
	}
	if withDigest {
		s.Digest = c.view.digest()
	}
	return s
}

// broadcast is one queued gossip message. Messages with the same name
// replace each other in the queue, so only the newest version of an
// endpoint is retransmitted.
type broadcast struct {
	name string
	msg  []byte
	done chan struct{}
}

var _ memberlist.NamedBroadcast = (*broadcast)(nil)

func (b *broadcast) Invalidates(memberlist.Broadcast) bool { return false }
func (b *broadcast) Name() string                          { return b.name }
func (b *broadcast) Message() []byte                       { return b.msg }
func (b *broadcast) Finished() {
	if b.done != nil {
		close(b.done)
	}
}

// delegate implements memberlist.Delegate for a Catalog. memberlist calls
// it from its own goroutines; every method takes c.mu briefly and never
// calls back into memberlist.
type delegate Catalog

var _ memberlist.Delegate = (*delegate)(nil)

func (d *delegate) NodeMeta(limit int) []byte {
	c := (*Catalog)(d)
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.meta
	if len(c.own.pub) > 0 && !c.leaving {
		m.Flags |= FlagEndpoints
	}
	b, err := m.Encode()
	if err != nil || len(b) > limit {
		// Validate and UpdateMeta keep this from happening; memberlist
		// panics on oversized meta, so send none rather than crash.
		return nil
	}
	return b
}

func (d *delegate) NotifyMsg(b []byte) {
	c := (*Catalog)(d)
	msg, err := decodeMessage(b)
	if err != nil {
		c.m.drop(DropDecode)
		c.log.Debug("catalog: bad message", "err", err)
		return
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case msg.Delta != nil:
		d := msg.Delta
		if !c.view.deltaNews(d) {
			return // a copy already applied, or refused by version: no crypto spent
		}
		if ok, ask := c.checkKeySealLocked(d.Owner, msg.Body, d.Seal); !ok {
			if ask {
				c.enqueueLocked(job{kind: jobRequest, to: d.Owner})
			}
			return
		}
		if !d.Delete {
			if name, ok := reservedAddr(c.cfg.Reserved, d.Ep.Addr); ok {
				// Kept out of this node's view as a withdrawal, so an older
				// version of the endpoint does not stay visible; relayed as
				// signed, since the address is only this node's own.
				c.m.drop(DropReserved)
				c.log.Warn("catalog: refused a peer's endpoint at one of this node's listeners", "peer", d.Owner, "endpoint", d.ID, "upstream", d.Ep.Addr, "listener", name)
				dd := *d
				dd.Delete, dd.Ep = true, Endpoint{}
				d = &dd
			}
		}
		news, gap := c.view.applyDelta(d, now)
		if news {
			c.queue("d/"+msg.Delta.Owner+"/"+msg.Delta.ID, append([]byte(nil), b...), nil)
			c.m.deltasRelayed.Add(1)
			c.m.deltas.WithLabelValues("relay").Inc()
			c.endpointsChangedLocked()
		}
		if gap {
			c.enqueueLocked(job{kind: jobRequest, to: msg.Delta.Owner})
		}
	case msg.State != nil:
		c.mergeStateLocked(msg.State, msg.Body, now)
	case msg.SyncReq != "":
		c.enqueueLocked(job{kind: jobSendState, to: msg.SyncReq})
	case msg.Leave != nil:
		if !c.view.leaveNews(msg.Leave) {
			return
		}
		if ok, _ := c.checkKeySealLocked(msg.Leave.Owner, msg.Body, msg.Leave.Seal); !ok {
			return // the owner is leaving: memberlist's own leave follows
		}
		if c.view.applyLeave(msg.Leave) {
			c.queue("l/"+msg.Leave.Owner, append([]byte(nil), b...), nil)
			if mi := c.members[msg.Leave.Owner]; mi != nil && mi.status != StatusLeft {
				mi.status, mi.since = StatusLeft, now
				c.markMembersLocked()
			}
			c.endpointsChangedLocked()
		}
	}
}

func (c *Catalog) mergeStateLocked(s *state, body []byte, now time.Time) {
	if s.Owner == c.cfg.Name || !c.view.alive[s.Owner] {
		return // the view refuses it anyway; spend no crypto
	}
	if !c.checkStateLocked(s, body, now) {
		return
	}
	delete(c.unanswered, s.Owner)
	for id, ep := range s.Eps {
		if name, ok := reservedAddr(c.cfg.Reserved, ep.Addr); ok {
			c.m.drop(DropReserved)
			c.log.Warn("catalog: refused a peer's endpoint at one of this node's listeners", "peer", s.Owner, "endpoint", id, "upstream", ep.Addr, "listener", name)
			delete(s.Eps, id)
		}
	}
	changed, behind := c.view.applyState(s, now)
	if changed {
		c.endpointsChangedLocked()
	}
	for _, o := range behind {
		c.enqueueLocked(job{kind: jobRequest, to: o})
	}
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return (*Catalog)(d).q.GetBroadcasts(overhead, limit)
}

// LocalState sends only this node's own endpoints plus a digest of the
// versions it knows, never the whole catalog, so push-pull stays small as
// the fleet grows.
func (d *delegate) LocalState(join bool) []byte {
	c := (*Catalog)(d)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ownStateLocked(true)
}

func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	c := (*Catalog)(d)
	msg, err := decodeMessage(buf)
	if err != nil || msg.State == nil {
		c.m.drop(DropDecode)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mergeStateLocked(msg.State, msg.Body, time.Now())
}

// events implements memberlist.EventDelegate and AliveDelegate. memberlist
// calls these with its node lock held: they must not call memberlist.
type events Catalog

var (
	_ memberlist.EventDelegate = (*events)(nil)
	_ memberlist.AliveDelegate = (*events)(nil)
)

// NotifyAlive refuses peers of another cluster or protocol.
func (e *events) NotifyAlive(peer *memberlist.Node) error {
	m, err := DecodeMeta(peer.Meta)
	if err != nil {
		return err
	}
	c := (*Catalog)(e)
	if m.ClusterID != c.cfg.ClusterID {
		return fmt.Errorf("catalog: peer %s is in cluster %q, not %q", peer.Name, m.ClusterID, c.cfg.ClusterID)
	}
	if m.ProtocolVersion != ProtocolVersion {
		return fmt.Errorf("catalog: peer %s speaks protocol %d, not %d", peer.Name, m.ProtocolVersion, ProtocolVersion)
	}
	return nil
}

func (e *events) NotifyJoin(n *memberlist.Node) {
	c := (*Catalog)(e)
	peers := c.numNodes.Add(1) - 1 // alive members other than this node
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setMemberLocked(n, StatusAlive)
	if n.Name != c.cfg.Name {
		c.view.setAlive(n.Name, true)
		c.fetchIfOwnsLocked(n.Name)
		if peers == 1 && len(c.own.pub) > 0 {
			// The first peer after being alone: changes made meanwhile
			// were not gossiped, and the join's push-pull may predate them.
			c.enqueueLocked(job{kind: jobSendState, to: n.Name})
		}
	}
	c.m.members.Set(float64(c.numNodes.Load()))
}

func (e *events) NotifyLeave(n *memberlist.Node) {
	c := (*Catalog)(e)
	c.numNodes.Add(-1)
	c.mu.Lock()
	defer c.mu.Unlock()
	// A member left when it said so: our own leave, its leave intent, or
	// memberlist's own leave message (StateLeft: the dead message came
	// from the node itself), whichever arrived first. Anything else is a
	// failure.
	status := StatusFailed
	if mi := c.members[n.Name]; n.Name == c.cfg.Name || n.State == memberlist.StateLeft || (mi != nil && mi.status == StatusLeft) {
		status = StatusLeft
	}
	c.setMemberLocked(n, status)
	switch {
	case n.Name == c.cfg.Name:
		c.log.Info("catalog: left the gossip cluster")
	case status == StatusFailed:
		c.m.memberFailures.Add(1)
		c.m.failures.Inc()
		c.log.Info("catalog: member failed", "peer", n.Name)
	default:
		c.log.Info("catalog: member left", "peer", n.Name)
	}
	delete(c.lastSync, n.Name)
	delete(c.unanswered, n.Name)
	delete(c.trust, n.Name)
	delete(c.probed, n.Name)
	if c.view.setAlive(n.Name, false) {
		c.endpointsChangedLocked()
	}
	c.m.members.Set(float64(c.numNodes.Load()))
}

func (e *events) NotifyUpdate(n *memberlist.Node) {
	c := (*Catalog)(e)
	c.mu.Lock()
	defer c.mu.Unlock()
	status := StatusAlive
	oldNet, known := "", false
	if mi := c.members[n.Name]; mi != nil {
		status, oldNet, known = mi.status, mi.meta.Network, true
	}
	c.setMemberLocked(n, status)
	if n.Name != c.cfg.Name && status == StatusAlive {
		c.fetchIfOwnsLocked(n.Name)
	}
	// An endpoint without a network takes its owner's; that may have moved.
	// (This node's own endpoints take the configured network.)
	if mi := c.members[n.Name]; n.Name != c.cfg.Name && (!known || mi.meta.Network != oldNet) {
		c.view.touchOwner(n.Name)
		c.endpointsChangedLocked()
	}
}

// fetchIfOwnsLocked asks a member for its full state when its meta says it
// publishes endpoints this node has none of yet, rather than waiting for
// the next push-pull. Members without endpoints are not asked, so a
// fleet-wide join does not cost N^2 requests.
func (c *Catalog) fetchIfOwnsLocked(name string) {
	mi := c.members[name]
	if mi == nil || mi.meta.Flags&FlagEndpoints == 0 {
		return
	}
	if len(c.view.visibleOf(name)) == 0 {
		c.enqueueLocked(job{kind: jobRequest, to: name})
	}
}

func (c *Catalog) setMemberLocked(n *memberlist.Node, status Status) {
	mi := c.members[n.Name]
	if mi == nil {
		mi = &memberInfo{}
		c.members[n.Name] = mi
	}
	node := *n
	node.Addr = slices.Clone(n.Addr)
	node.Meta = slices.Clone(n.Meta)
	mi.node = node
	if m, err := DecodeMeta(n.Meta); err == nil {
		mi.meta = m
	}
	if mi.status != status {
		mi.status, mi.since = status, time.Now()
	}
	c.markMembersLocked()
}

// maintain expires TTLs, starts due health checks and drops old tombstones.
func (c *Catalog) maintain() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.MaintenanceInterval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case now := <-t.C:
			c.forgetExpired(c.tick(now))
		}
	}
}

func (c *Catalog) tick(now time.Time) (expired []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range sortedKeys(c.own.regs) {
		r := c.own.regs[id]
		if !r.expires.IsZero() && now.After(r.expires) {
			c.log.Info("catalog: endpoint lease expired", "endpoint", id)
			delete(c.own.regs, id)
			expired = append(expired, id)
			if r.published {
				c.publishLocked(id, r, false)
			}
			continue
		}
		if r.Check == nil || r.checking || now.Before(r.nextCheck) {
			continue
		}
		select {
		case c.checks <- struct{}{}:
		default:
			continue // at the concurrency limit; try next tick
		}
		r.checking = true
		r.nextCheck = now.Add(r.Check.Interval)
		c.wg.Add(1)
		go c.runCheck(id, r)
	}
	if now.Sub(c.lastGC) >= c.cfg.TombstoneTTL/8 {
		// Tombstones outlive their TTL by at most an eighth.
		c.view.gc(now, c.cfg.TombstoneTTL)
		c.lastGC = now
	}
	c.recheckTrustLocked(now)
	c.probeIdentitiesLocked()
	// Owners with missed changes and no newer delta to notice it by.
	for _, o := range c.view.lagging() {
		c.enqueueLocked(job{kind: jobRequest, to: o})
	}
	// Requests without an answer: ask again after 2, 4, 8, 16 x
	// SyncInterval, then leave it to push-pull.
	for _, o := range sortedKeys(c.unanswered) {
		tries := c.unanswered[o]
		switch {
		case !c.view.alive[o] || tries > maxSyncRetries:
			delete(c.unanswered, o)
		case now.Sub(c.lastSync[o]) >= c.cfg.SyncInterval<<tries:
			c.enqueueLocked(job{kind: jobRequest, to: o})
		}
	}
	for name, at := range c.lastSync {
		if now.Sub(at) > time.Minute && c.unanswered[name] == 0 {
			delete(c.lastSync, name)
		}
	}
	return expired
}

// forgetExpired removes the files of registrations whose lease ran out,
// unless they were registered again meanwhile.
func (c *Catalog) forgetExpired(ids []string) {
	if len(ids) == 0 || c.cfg.StateDir == "" {
		return
	}
	c.fileMu.Lock()
	defer c.fileMu.Unlock()
	for _, id := range ids {
		c.mu.Lock()
		back := c.own.regs[id] != nil
		c.mu.Unlock()
		if back {
			continue
		}
		if err := c.persist(id, nil); err != nil {
			c.log.Warn("catalog: could not remove an expired registration's file", "endpoint", id, "err", err)
		}
	}
}

// maxSyncRetries bounds how often an unanswered full-state request is
// repeated.
const maxSyncRetries = 4

// runCheck checks one endpoint and records the outcome.
func (c *Catalog) runCheck(id string, r *reg) {
	defer c.wg.Done()
	defer func() { <-c.checks }()
	ctx, cancel := context.WithTimeout(c.ctx, r.Check.Timeout)
	err := probe(ctx, r.Addr, r.Check.HTTPPath)
	cancel()
	kind, result := "tcp", "pass"
	if r.Check.HTTPPath != "" {
		kind = "http"
	}
	if err != nil {
		result = "fail"
	}
	c.m.checks.WithLabelValues(kind, result).Inc()
	c.mu.Lock()
	defer c.mu.Unlock()
	r.checking = false
	if c.own.regs[id] != r || c.leaving {
		return // replaced or removed meanwhile
	}
	r.checkedAt, r.checkErr = time.Now(), ""
	if err != nil {
		r.checkErr = err.Error()
	}
	if err == nil {
		r.fails = 0
		if !r.healthy {
			r.healthy = true
			c.publishLocked(id, r, true)
		}
		return
	}
	r.fails++
	if r.healthy && r.fails >= max(1, r.Check.Failures) {
		c.log.Info("catalog: endpoint check failing, withdrawing", "endpoint", id, "upstream", r.Addr, "err", err)
		r.healthy = false
		if r.published {
			c.publishLocked(id, r, false)
		}
	}
}

// gatedWriter discards writes once ctx is done.
type gatedWriter struct {
	ctx context.Context
	w   io.Writer
}

func (g gatedWriter) Write(p []byte) (int, error) {
	if g.ctx.Err() != nil {
		return len(p), nil
	}
	return g.w.Write(p)
}
