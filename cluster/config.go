package cluster

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshgate/meshgate/cluster/catalog"
)

// Config configures a Node. Start from DefaultConfig.
type Config struct {
	// NodeName is the node's unique name: its gossip name and raft server
	// ID. Required.
	NodeName string
	// ClusterID separates fleets (peers of another cluster are refused).
	// Default "meshgate".
	ClusterID string
	// Network is the network this node serves. Required.
	Network string
	// GatewayAddr is where other networks reach this node's gateway
	// ("host:port", templates allowed); "" = not a cross-network gateway.
	GatewayAddr string
	// BridgeAddr is where other networks' gateways open bridge tunnels
	// to this node ("host:port", templates allowed; gossiped as
	// bridge_addr); "" = no bridge listener.
	BridgeAddr string
	// Labels are the node's labels (gossiped as a digest).
	Labels map[string]string

	// DataDir holds the raft log and stable store (raft/raft.db, bbolt)
	// and snapshots (raft/snapshots). "" keeps everything in memory: the
	// state is lost on restart (tests only).
	DataDir string

	// RaftBind is the listener for raft and forwarded writes ("host:port";
	// go-sockaddr templates allowed; port 0 picks a free port). Default
	// "0.0.0.0:8300".
	RaftBind string
	// RaftAdvertise is the address other nodes dial; "" = the bound
	// address (a private IP if bound to 0.0.0.0).
	RaftAdvertise string
	// TLS secures raft and forwarding with mutual TLS. Required unless
	// Streams is set. Use GetCertificate / GetClientCertificate to rotate
	// certificates (for example from the built-in CA) without a restart.
	TLS *tls.Config
	// Streams replaces the TLS-over-TCP stream network (tests use an
	// in-memory one). nil = &TLSNetwork{Config: TLS}.
	Streams StreamNetwork
	// RaftTransport replaces the raft transport built on Streams (tests use
	// raft.InmemTransport); RaftAdvertise must then equal its LocalAddr.
	// Forwarded writes still travel over Streams.
	RaftTransport raft.Transport

	// Bootstrap makes a node with no raft state start a one-node cluster.
	Bootstrap bool
	// BootstrapExpect makes nodes with no raft state wait until this many
	// nodes with a raft address are alive in gossip (and none of them is
	// part of a cluster yet); then the node whose name sorts first
	// bootstraps the configuration with the first BootstrapExpect names.
	// Every node must use the same value. 0 = off.
	BootstrapExpect int
	// MaxVoters caps raft voters; further servers are non-voters that the
	// leader promotes when a voter dies. Default 5.
	MaxVoters int
	// ReconcileInterval is how often the leader compares raft servers with
	// gossip members. Default 1s.
	ReconcileInterval time.Duration
	// DeadServerTimeout is how long a voter must be failed in gossip before
	// the leader replaces it with a healthy non-voter; a server that left
	// gracefully is removed at once. Default 10s.
	DeadServerTimeout time.Duration
	// StabilizationTime is how long a new server must be alive before it
	// may become a voter. Default 2s.
	StabilizationTime time.Duration

	// Join lists gossip addresses to join at start; the node retries with
	// backoff in the background until one answers or the node closes.
	Join []string

	// Raft holds the raft timers.
	Raft RaftConfig
	// Gossip configures membership and the endpoint catalog. Its Name,
	// ClusterID, Network, GatewayAddr, Labels, RaftAddr, Logger and
	// Registerer are filled from this Config.
	Gossip catalog.Config
	// KeyringFile keeps the gossip keys this node runs with (one base64
	// key a line, the primary first, mode 0600). It is read at start when
	// Gossip.Keys is empty and rewritten whenever the node follows a fleet
	// keyring change, so a restarted node gossips with the fleet's current
	// keys without asking anyone. Empty keeps nothing.
	KeyringFile string
	// SeedKeyring writes this node's gossip keys as the fleet keyring
	// (KeyringKey) once raft has a leader, if the store holds none yet: a
	// fleet's first node, which made the key, publishes it so every node
	// follows it from then on. Default false.
	SeedKeyring bool

	// Logger receives logs (raft and memberlist included); nil discards.
	Logger *slog.Logger
	// Registerer, if set, receives the cluster and catalog metrics.
	Registerer prometheus.Registerer
}

// RaftConfig holds the raft timers (see hashicorp/raft's Config).
type RaftConfig struct {
	// HeartbeatTimeout and ElectionTimeout bound failover time. Default 1s.
	HeartbeatTimeout time.Duration
	ElectionTimeout  time.Duration
	// LeaderLeaseTimeout must not exceed HeartbeatTimeout. Default 500ms.
	LeaderLeaseTimeout time.Duration
	// CommitTimeout is the longest wait before a heartbeat carries the
	// commit index. Default 50ms.
	CommitTimeout time.Duration
	// SnapshotInterval and SnapshotThreshold decide when to snapshot:
	// every interval, if at least threshold entries were logged since the
	// last one. Defaults 2m and 8192.
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	// TrailingLogs is how many entries stay after a snapshot. Default 10240.
	TrailingLogs uint64
	// ApplyTimeout bounds a write when its context has no deadline.
	// Default 10s.
	ApplyTimeout time.Duration
}

// DefaultConfig returns a Config with every default; NodeName, Network and
// TLS (or Streams) still have to be set.
func DefaultConfig() Config {
	return Config{
		ClusterID:         "meshgate",
		RaftBind:          "0.0.0.0:8300",
		MaxVoters:         5,
		ReconcileInterval: time.Second,
		DeadServerTimeout: 10 * time.Second,
		StabilizationTime: 2 * time.Second,
		Raft: RaftConfig{
			HeartbeatTimeout:   time.Second,
			ElectionTimeout:    time.Second,
			LeaderLeaseTimeout: 500 * time.Millisecond,
			CommitTimeout:      50 * time.Millisecond,
			SnapshotInterval:   2 * time.Minute,
			SnapshotThreshold:  8192,
			TrailingLogs:       10240,
			ApplyTimeout:       10 * time.Second,
		},
		Gossip: catalog.DefaultConfig(),
	}
}

// Validate reports the first problem with c.
func (c *Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("cluster: config %s: %s", field, fmt.Sprintf(format, args...))
	}
	if c.NodeName == "" {
		return bad("NodeName", "required")
	}
	if c.Network == "" {
		return bad("Network", "required")
	}
	if c.TLS == nil && c.Streams == nil {
		return bad("TLS", "required (or Streams)")
	}
	if c.RaftTransport != nil && c.RaftAdvertise != string(c.RaftTransport.LocalAddr()) {
		return bad("RaftAdvertise", "%q must equal the raft transport address %q", c.RaftAdvertise, c.RaftTransport.LocalAddr())
	}
	if c.RaftBind == "" && c.RaftTransport == nil {
		return bad("RaftBind", "required")
	}
	if c.Bootstrap && c.BootstrapExpect > 0 {
		return bad("Bootstrap", "excludes BootstrapExpect")
	}
	if c.BootstrapExpect < 0 {
		return bad("BootstrapExpect", "negative")
	}
	if c.MaxVoters < 1 {
		return bad("MaxVoters", "must be at least 1")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"ReconcileInterval", c.ReconcileInterval}, {"DeadServerTimeout", c.DeadServerTimeout},
		{"Raft.HeartbeatTimeout", c.Raft.HeartbeatTimeout}, {"Raft.ElectionTimeout", c.Raft.ElectionTimeout},
		{"Raft.LeaderLeaseTimeout", c.Raft.LeaderLeaseTimeout}, {"Raft.CommitTimeout", c.Raft.CommitTimeout},
		{"Raft.SnapshotInterval", c.Raft.SnapshotInterval}, {"Raft.ApplyTimeout", c.Raft.ApplyTimeout},
	} {
		if d.v <= 0 {
			return bad(d.name, "must be positive")
		}
	}
	if c.StabilizationTime < 0 {
		return bad("StabilizationTime", "negative")
	}
	if c.Raft.LeaderLeaseTimeout > c.Raft.HeartbeatTimeout {
		return bad("Raft.LeaderLeaseTimeout", "must not exceed HeartbeatTimeout")
	}
	return nil
}
