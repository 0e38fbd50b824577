package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	sockaddr "github.com/hashicorp/go-sockaddr"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/meshgate/meshgate/cluster/catalog"
)

// Node is one meshgate cluster member: a raft server holding the
// replicated store and a gossip member holding the endpoint catalog. All
// methods are safe for concurrent use.
type Node struct {
	cfg      Config
	log      *slog.Logger
	m        *metrics
	fsm      *fsm
	raft     *raft.Raft
	trans    raft.Transport
	mux      *mux
	streams  StreamNetwork
	fwd      *forwardClient
	srv      *http.Server
	cat      *catalog.Catalog
	closers  []io.Closer // stores, closed last
	raftAddr string

	cfgCache configCache

	started time.Time   // when New ran
	joined  atomic.Bool // a live gossip peer was seen since start

	keysMu sync.Mutex // serializes SyncKeyring (local keyring and KeyringFile)

	apMu        sync.Mutex // guards expectSet, expectSince, refusedAt
	expectSet   []string
	refusedAt   map[string]time.Time
	expectSince time.Time

	ctx       context.Context // canceled by Close
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// New starts a node: it opens the raft listener and stores, starts raft
// and gossip, bootstraps if configured, and joins cfg.Join in the
// background. ctx bounds only the start-up.
func New(ctx context.Context, cfg Config) (n *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n = &Node{cfg: cfg, log: log.With("node", cfg.NodeName), m: newMetrics(cfg.Registerer), fsm: newFSM(), started: time.Now()}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			n.Close()
			n = nil
		}
	}()
	n.streams = cfg.Streams
	if n.streams == nil {
		n.streams = &TLSNetwork{Config: cfg.TLS}
	}
	n.fwd = newForwardClient(n.streams)

	if err := n.listen(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("cluster: start: %w", err)
	}
	hasState, err := n.startRaft()
	if err != nil {
		return nil, err
	}

	n.srv = &http.Server{Handler: n.forwardHandler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: catalog.StdLogger(n.log)}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		_ = n.srv.Serve(n.mux.fwd)
	}()

	gc := cfg.Gossip
	gc.Name, gc.ClusterID, gc.Network = cfg.NodeName, cfg.ClusterID, cfg.Network
	gc.GatewayAddr, gc.BridgeAddr, gc.Labels, gc.RaftAddr = cfg.GatewayAddr, cfg.BridgeAddr, cfg.Labels, n.raftAddr
	gc.Registerer = cfg.Registerer
	if gc.StateDir == "" && cfg.DataDir != "" {
		gc.StateDir = filepath.Join(cfg.DataDir, "catalog", "registrations")
	}
	if gc.Logger == nil {
		gc.Logger = log
	}
	if len(gc.Keys) == 0 && cfg.KeyringFile != "" {
		if _, serr := os.Stat(cfg.KeyringFile); serr == nil {
			if gc.Keys, err = ReadKeyringFile(cfg.KeyringFile); err != nil {
				return nil, err
			}
		}
	}
	if n.cat, err = catalog.New(gc); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if n.cat.Keyring() != nil {
		n.m.encrypted.Set(1)
	} else {
		n.m.encrypted.Set(0)
	}
	keyCh, unwatchKeys := n.Watch(KeyringKey)
	if err := n.SyncKeyring(); err != nil {
		unwatchKeys()
		return nil, err
	}
	n.keysMu.Lock()
	err = n.keepKeys()
	n.keysMu.Unlock()
	if err != nil {
		unwatchKeys()
		return nil, err
	}
	n.wg.Add(1)
	go n.keyringLoop(keyCh, unwatchKeys)

	if cfg.Bootstrap && !hasState {
		c := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(cfg.NodeName), Address: raft.ServerAddress(n.raftAddr)}}}
		if err := n.raft.BootstrapCluster(c).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return nil, fmt.Errorf("cluster: bootstrap: %w", err)
		}
	}

	n.wg.Add(2)
	go n.reconcileLoop()
	go n.rejoinLoop()
	if len(cfg.Join) > 0 {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			if _, err := n.cat.Join(n.ctx, cfg.Join); err != nil && n.ctx.Err() == nil {
				n.log.Warn("cluster: join failed", "err", err)
			}
		}()
	}
	return n, nil
}

// listen opens the raft/forward listener and works out the advertised
// raft address.
func (n *Node) listen() error {
	cfg := n.cfg
	bind := cfg.RaftBind
	if cfg.RaftTransport != nil {
		bind = cfg.RaftAdvertise
	}
	bind, err := catalog.ResolveAddr(bind)
	if err != nil {
		return fmt.Errorf("cluster: RaftBind: %w", err)
	}
	ln, err := n.streams.Listen(bind)
	if err != nil {
		return err
	}
	n.mux = newMux(ln, n.log)
	if cfg.RaftAdvertise != "" {
		if n.raftAddr, err = catalog.ResolveAddr(cfg.RaftAdvertise); err != nil {
			return fmt.Errorf("cluster: RaftAdvertise: %w", err)
		}
		return nil
	}
	host, port, err := net.SplitHostPort(ln.Addr().String())
	if err != nil {
		return fmt.Errorf("cluster: listener address: %w", err)
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		priv, err := sockaddr.GetPrivateIP()
		if err != nil || priv == "" {
			return fmt.Errorf("cluster: cannot pick an address to advertise for %s; set RaftAdvertise", ln.Addr())
		}
		host = priv
	}
	n.raftAddr = net.JoinHostPort(host, port)
	return nil
}

// startRaft opens the stores and starts raft. It reports whether raft
// state existed already.
func (n *Node) startRaft() (bool, error) {
	cfg := n.cfg
	hlog := hclog.FromStandardLogger(catalog.StdLogger(n.log.With("component", "raft")), &hclog.LoggerOptions{
		Name:  "raft",
		Level: hclogLevel(n.log),
	})
	var (
		logs   raft.LogStore
		stable raft.StableStore
		snaps  raft.SnapshotStore
	)
	if cfg.DataDir == "" {
		mem := raft.NewInmemStore()
		logs, stable, snaps = mem, mem, raft.NewInmemSnapshotStore()
	} else {
		dir := filepath.Join(cfg.DataDir, "raft")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return false, fmt.Errorf("cluster: data dir: %w", err)
		}
		bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
		if err != nil {
			return false, fmt.Errorf("cluster: open raft log: %w", err)
		}
		n.closers = append(n.closers, bolt)
		cache, err := raft.NewLogCache(512, bolt)
		if err != nil {
			return false, fmt.Errorf("cluster: raft log cache: %w", err)
		}
		logs, stable = cache, bolt
		if snaps, err = raft.NewFileSnapshotStoreWithLogger(dir, 2, hlog); err != nil {
			return false, fmt.Errorf("cluster: snapshot store: %w", err)
		}
	}
	hasState, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		return false, fmt.Errorf("cluster: read raft state: %w", err)
	}

	n.trans = cfg.RaftTransport
	if n.trans == nil {
		sl := &streamLayer{subListener: n.mux.raft, net: n.streams, advertise: tcpAddr(n.raftAddr)}
		nt := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream:  sl,
			MaxPool: 3,
			Timeout: 10 * time.Second,
			Logger:  hlog,
		})
		n.trans = nt
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeName)
	rc.HeartbeatTimeout = cfg.Raft.HeartbeatTimeout
	rc.ElectionTimeout = cfg.Raft.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.Raft.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.Raft.CommitTimeout
	rc.SnapshotInterval = cfg.Raft.SnapshotInterval
	if cfg.Raft.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = cfg.Raft.SnapshotThreshold
	}
	if cfg.Raft.TrailingLogs > 0 {
		rc.TrailingLogs = cfg.Raft.TrailingLogs
	}
	rc.Logger = hlog
	if err := raft.ValidateConfig(rc); err != nil {
		return false, fmt.Errorf("cluster: raft config: %w", err)
	}
	r, err := raft.NewRaft(rc, n.fsm, logs, stable, snaps, n.trans)
	if err != nil {
		return false, fmt.Errorf("cluster: start raft: %w", err)
	}
	n.raft = r
	return hasState, nil
}

func hclogLevel(l *slog.Logger) hclog.Level {
	if l.Enabled(context.Background(), slog.LevelDebug) {
		return hclog.Debug
	}
	return hclog.Info
}

// Name returns the node's name.
func (n *Node) Name() string { return n.cfg.NodeName }

// RaftAddr returns the advertised raft address.
func (n *Node) RaftAddr() string { return n.raftAddr }

// Catalog returns the node's gossip membership and endpoint catalog.
func (n *Node) Catalog() *catalog.Catalog { return n.cat }

// Join joins the gossip cluster through addrs, retrying until one answers
// or ctx ends; see catalog.Catalog.Join.
func (n *Node) Join(ctx context.Context, addrs []string) (int, error) {
	if n.ctx.Err() != nil {
		return 0, ErrClosed
	}
	return n.cat.Join(ctx, addrs)
}

// IsLeader reports whether this node is the raft leader now.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the current leader's name and raft address, or "" when
// none is known.
func (n *Node) Leader() (name, addr string) {
	a, id := n.raft.LeaderWithID()
	return string(id), string(a)
}

// Raft roles reported by Members.
const (
	RoleLeader   = "leader"
	RoleVoter    = "voter"
	RoleNonvoter = "nonvoter"
	RoleNone     = "" // not a raft server
)

// Member is a gossip member with its raft role.
type Member struct {
	catalog.Member
	RaftRole string
}

// Members lists gossip members (this node included) with their raft roles.
func (n *Node) Members() []Member {
	roles := map[string]string{}
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			roles[string(s.ID)] = RoleNonvoter
			if s.Suffrage == raft.Voter {
				roles[string(s.ID)] = RoleVoter
			}
		}
	}
	if _, id := n.raft.LeaderWithID(); id != "" {
		roles[string(id)] = RoleLeader
	}
	var out []Member
	for _, m := range n.cat.Members() {
		out = append(out, Member{Member: m, RaftRole: roles[m.Name]})
	}
	return out
}

// Server is one raft server in the current configuration.
type Server struct {
	ID      string
	Address string
	Voter   bool
}

// Servers returns the raft configuration as this node knows it.
func (n *Node) Servers() ([]Server, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, mapRaftErr(err)
	}
	var out []Server
	for _, s := range f.Configuration().Servers {
		out = append(out, Server{ID: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == raft.Voter})
	}
	slices.SortFunc(out, func(a, b Server) int {
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
	return out, nil
}

// Get returns a copy of the record at key from this node's state, which
// may lag the leader; call Sync first for a linearizable read.
func (n *Node) Get(key string) (Record, bool) { return n.fsm.get(key) }

// List returns copies of the records whose keys start with prefix, in key
// order, from this node's state (see Get).
func (n *Node) List(prefix string) []Record { return n.fsm.list(prefix) }

// AppliedIndex returns the last raft index applied to this node's state.
func (n *Node) AppliedIndex() uint64 { return n.fsm.appliedIndex() }

// Watch returns a channel (buffer 1, never blocks the state machine) that
// receives after a key starting with prefix changes or a snapshot is
// restored. Call cancel to stop watching.
func (n *Node) Watch(prefix string) (<-chan struct{}, func()) { return n.fsm.watch(prefix) }

// Put stores value under key through raft.
func (n *Node) Put(ctx context.Context, key string, value []byte) error {
	_, err := n.Apply(ctx, Put(key, value))
	return err
}

// Delete removes key through raft.
func (n *Node) Delete(ctx context.Context, key string) error {
	_, err := n.Apply(ctx, Delete(key))
	return err
}

// Apply writes ops atomically as one raft log entry and returns its index.
// On a follower the batch is forwarded to the leader; while no leader is
// known it is retried until ctx ends. Records under ConfigPrefix are
// validated first and a bad one fails the batch with a *ValidationError.
// Apply returns after the write is committed and, unless ctx ends first,
// applied to this node's state, so a following Get sees it.
func (n *Node) Apply(ctx context.Context, ops ...Op) (uint64, error) {
	if n.ctx.Err() != nil {
		return 0, ErrClosed
	}
	start := time.Now()
	idx, err := n.apply(ctx, ops)
	switch {
	case err == nil:
		n.m.applies.WithLabelValues("ok").Inc()
		n.m.applyTime.Observe(time.Since(start).Seconds())
	case errors.Is(err, ErrConflict):
		n.m.applies.WithLabelValues("conflict").Inc()
	case errors.Is(err, ErrInvalid):
		n.m.applies.WithLabelValues("invalid").Inc()
	default:
		n.m.applies.WithLabelValues("error").Inc()
	}
	return idx, err
}

func (n *Node) apply(ctx context.Context, ops []Op) (uint64, error) {
	if err := validateOps(ops); err != nil {
		return 0, err
	}
	if err := n.validateConfigOps(ops); err != nil {
		return 0, err
	}
	cmd, err := encodeCommand(ops)
	if err != nil {
		return 0, err
	}
	replayable := !slices.ContainsFunc(ops, func(op Op) bool { return op.Type == OpCheck })
	backoff := 10 * time.Millisecond
	for {
		idx, err := n.tryApply(ctx, cmd, replayable)
		if err == nil {
			_ = n.fsm.waitIndex(ctx, idx)
			return idx, nil
		}
		var re errRetryable
		if !errors.As(err, &re) {
			return 0, err
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("cluster: apply: %w (%w)", re.err, ctx.Err())
		case <-n.ctx.Done():
			return 0, ErrClosed
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 250*time.Millisecond)
	}
}

// tryApply applies cmd at the leader once.
func (n *Node) tryApply(ctx context.Context, cmd []byte, replayable bool) (uint64, error) {
	if n.raft.State() == raft.Leader {
		idx, err := n.applyLocal(ctx, cmd)
		if errors.Is(err, ErrNotLeader) {
			return 0, errRetryable{err}
		}
		return idx, err
	}
	addr, id := n.raft.LeaderWithID()
	if addr == "" || string(id) == n.cfg.NodeName {
		return 0, errRetryable{ErrNoLeader}
	}
	n.m.forwarded.Inc()
	idx, err := n.fwd.call(ctx, string(addr), "/v1/apply", cmd, replayable)
	if err != nil {
		var re errRetryable
		var ce *ConflictError
		if errors.As(err, &re) || errors.As(err, &ce) || errors.Is(err, ErrBadCommand) {
			return 0, err
		}
		return 0, &ForwardError{Leader: string(id), Err: err}
	}
	return idx, nil
}

// applyLocal applies an encoded command on the leader.
func (n *Node) applyLocal(ctx context.Context, cmd []byte) (uint64, error) {
	if n.raft.State() != raft.Leader {
		return 0, ErrNotLeader
	}
	f := n.raft.Apply(cmd, n.timeout(ctx))
	if err := f.Error(); err != nil {
		return 0, mapRaftErr(err)
	}
	if res, ok := f.Response().(applyResult); ok && res.err != nil {
		return 0, res.err
	}
	return f.Index(), nil
}

// timeout turns ctx's deadline into raft's enqueue timeout.
func (n *Node) timeout(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return max(time.Until(dl), time.Millisecond)
	}
	return n.cfg.Raft.ApplyTimeout
}

// mapRaftErr maps raft's errors onto this package's sentinels.
func mapRaftErr(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrNotVoter):
		return fmt.Errorf("%w: %w", ErrNotLeader, err)
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress),
		errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("%w: %w", ErrNoLeader, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return fmt.Errorf("cluster: raft: %w", err)
}

// Sync waits until this node's state includes every write committed
// before the call (a read barrier): the leader runs a raft barrier and the
// node waits to apply up to the leader's index.
func (n *Node) Sync(ctx context.Context) error {
	if n.ctx.Err() != nil {
		return ErrClosed
	}
	backoff := 10 * time.Millisecond
	for {
		var idx uint64
		var err error
		if n.raft.State() == raft.Leader {
			if err = n.raft.Barrier(n.timeout(ctx)).Error(); err != nil {
				err = errRetryable{mapRaftErr(err)}
			}
			idx = n.fsm.appliedIndex()
		} else if addr, id := n.raft.LeaderWithID(); addr == "" || string(id) == n.cfg.NodeName {
			err = errRetryable{ErrNoLeader}
		} else {
			idx, err = n.fwd.call(ctx, string(addr), "/v1/barrier", nil, true)
		}
		if err == nil {
			return n.fsm.waitIndex(ctx, idx)
		}
		var re errRetryable
		if !errors.As(err, &re) {
			return &ForwardError{Err: err}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: sync: %w (%w)", re.err, ctx.Err())
		case <-n.ctx.Done():
			return ErrClosed
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 250*time.Millisecond)
	}
}

// removeServer removes a raft server; leader only.
func (n *Node) removeServer(ctx context.Context, id string) error {
	if n.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, n.timeout(ctx)).Error(); err != nil {
		return mapRaftErr(err)
	}
	n.m.autopilot.WithLabelValues("remove").Inc()
	return nil
}

// Leave departs for good: the node hands off leadership, has the leader
// remove it from the raft configuration, withdraws its endpoints, tells
// gossip peers it is leaving, and closes. Use Close for a restart.
func (n *Node) Leave(ctx context.Context) error {
	if n.ctx.Err() != nil {
		return nil
	}
	var errs []error
	if servers, err := n.Servers(); err == nil && len(servers) > 1 && slices.ContainsFunc(servers, func(s Server) bool { return s.ID == n.cfg.NodeName }) {
		if n.IsLeader() {
			if err := n.raft.LeadershipTransfer().Error(); err != nil {
				n.log.Warn("cluster: leadership transfer before leave failed", "err", err)
			}
		}
		if err := n.leaveRaft(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := n.cat.Leave(ctx); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, n.Close())
	return errors.Join(errs...)
}

// leaveRaft asks the leader to remove this node, retrying until ctx ends.
func (n *Node) leaveRaft(ctx context.Context) error {
	backoff := 20 * time.Millisecond
	for {
		var err error
		if n.IsLeader() {
			err = n.removeServer(ctx, n.cfg.NodeName)
			if errors.Is(err, ErrNotLeader) {
				err = errRetryable{err}
			}
		} else if addr, id := n.raft.LeaderWithID(); addr == "" || string(id) == n.cfg.NodeName {
			err = errRetryable{ErrNoLeader}
		} else {
			_, err = n.fwd.call(ctx, string(addr), "/v1/remove?id="+url.QueryEscape(n.cfg.NodeName), nil, true)
		}
		if err == nil {
			return nil
		}
		var re errRetryable
		if !errors.As(err, &re) {
			return fmt.Errorf("cluster: leave raft: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: leave raft: %w (%w)", re.err, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 250*time.Millisecond)
	}
}

// Close stops the node without leaving: peers see it fail and raft keeps
// it in the configuration, so a restart with the same DataDir resumes. It
// is idempotent and returns after every goroutine has stopped.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.cancel()
		var errs []error
		if n.srv != nil {
			_ = n.srv.Close()
		}
		if n.raft != nil {
			if err := n.raft.Shutdown().Error(); err != nil {
				errs = append(errs, fmt.Errorf("cluster: raft shutdown: %w", err))
			}
		}
		if c, ok := n.trans.(io.Closer); ok {
			_ = c.Close()
		}
		if n.mux != nil {
			_ = n.mux.Close()
		}
		if n.fwd != nil {
			n.fwd.close()
		}
		if n.cat != nil {
			if err := n.cat.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		n.wg.Wait()
		for _, c := range n.closers {
			if err := c.Close(); err != nil {
				errs = append(errs, fmt.Errorf("cluster: close store: %w", err))
			}
		}
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}
