package catalog

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-sockaddr/template"
	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Catalog. Start from DefaultConfig.
type Config struct {
	// Name is the node's unique name in the cluster. Required.
	Name string
	// ClusterID separates fleets: peers with another ClusterID are refused
	// at join. Default "meshgate".
	ClusterID string
	// Network is the network this node and its endpoints live in. Required.
	Network string
	// GatewayAddr is where other networks reach this node's gateway
	// ("host:port"; go-sockaddr templates allowed in the host). "" = this
	// node is not a cross-network gateway.
	GatewayAddr string
	// BridgeAddr is where other networks' gateways open bridge tunnels
	// to this node ("host:port"; go-sockaddr templates allowed in the
	// host), gossiped beside GatewayAddr. "" = this node accepts no
	// bridge tunnels.
	BridgeAddr string
	// RaftAddr is published in node meta for the raft layer; "" = none.
	RaftAddr string
	// Labels are the node's labels; only their digest is gossiped.
	Labels map[string]string

	// BindAddr is the gossip listener ("host:port", UDP and TCP). The host
	// may be a go-sockaddr template such as `{{ GetPrivateIP }}`; port 0
	// picks a free port. Default "0.0.0.0:7946".
	BindAddr string
	// AdvertiseAddr is the address peers use ("host:port", templates
	// allowed); "" = derived from BindAddr (a private IP if it is 0.0.0.0).
	AdvertiseAddr string

	// Keys are the gossip encryption keys (16, 24 or 32 bytes each); the
	// first is the primary. Empty = gossip is not encrypted.
	Keys [][]byte

	// Incarnation orders this process's endpoint changes after those of
	// earlier runs. 0 = the current time in nanoseconds.
	Incarnation uint64

	// Gossip timers, applied on top of memberlist.DefaultLANConfig.
	// Defaults: GossipInterval 100ms, GossipNodes 4, ProbeInterval 500ms,
	// ProbeTimeout 250ms, SuspicionMult 4, RetransmitMult 6,
	// PushPullInterval 30s, TCPTimeout 10s.
	GossipInterval time.Duration
	GossipNodes    int
	// ProbeInterval sets how fast a crashed node is declared dead and its
	// endpoints withdrawn everywhere: about SuspicionMult*log10(N) probe
	// intervals of suspicion (at least 4 with N <= 10) plus 1-2 intervals
	// to the first failed probe and ~0.4s of gossip. A live node that
	// stalls for longer than that suspicion time is declared dead too, so
	// this is also the stall a node survives. Default 500ms: ~4.8s at
	// N = 50 (memberlist's 1s gives ~9s), with no false deaths measured
	// even while other processes saturated every core (benchmarks:
	// BenchmarkCrashWithdrawn). 200ms (with ProbeTimeout 100ms) withdraws
	// in ~2s at N = 50 and stays clean under load inside the process,
	// but healthy nodes were declared dead when the whole machine was
	// saturated; use it only for fleets on one low-latency network with
	// CPU to spare. Probes cost ~2 packets per interval per node.
	ProbeInterval time.Duration
	// ProbeTimeout is how long a direct ping may take before indirect
	// pings start; an ack still counts until ProbeInterval ends. Keep it
	// above the round trip between any two gossip peers. Default 250ms.
	ProbeTimeout time.Duration
	// SuspicionMult is left at memberlist's LAN default on purpose:
	// lowering it (with fewer confirmations needed) trades false deaths
	// under CPU starvation for speed; tune ProbeInterval instead.
	SuspicionMult    int
	RetransmitMult   int
	PushPullInterval time.Duration
	TCPTimeout       time.Duration

	// DisableCompression turns off memberlist's LZW compression of gossip
	// packets and push-pull streams. Compression saves bytes mostly on
	// push-pull; it costs CPU and a 64 KiB allocation for every packet
	// sent, probes included. Default false (compress), as in memberlist.
	DisableCompression bool

	// SyncInterval is the shortest time between two full-state requests to
	// the same owner. Default 1s.
	SyncInterval time.Duration
	// MaintenanceInterval is how often TTLs, due health checks and
	// tombstones are looked at. Default 500ms.
	MaintenanceInterval time.Duration
	// TombstoneTTL is how long a withdrawn endpoint's tombstone is kept.
	// It must exceed how long a delta can circulate. Default 5m.
	TombstoneTTL time.Duration
	// GossipToTheDeadTime is how long gossip still reaches a member after
	// it was declared dead, so that it can refute or, restarted, hear of
	// its peers again. Default 30s (memberlist's). A member that is down
	// for longer comes back only through a join or a reconnect.
	GossipToTheDeadTime time.Duration
	// ReconnectInterval is how often this node dials members it saw fail
	// (a few each time, with up to 25% jitter), so that a crashed node that
	// comes back is found again even if it has nobody to join. Default
	// 10s; negative turns reconnecting off.
	ReconnectInterval time.Duration
	// ReconnectTimeout is how long a failed member keeps being dialled.
	// Default 72h, as Consul's reconnect_timeout.
	ReconnectTimeout time.Duration
	// StateDir keeps this node's registrations across restarts: one JSON
	// file (mode 0600) per registration, written before Register returns.
	// "" = registrations live in memory only.
	StateDir string
	// MaxEndpoints bounds this node's own registrations. Default 10000.
	MaxEndpoints int
	// MaxChecks bounds concurrent health-check dials. Default 32.
	MaxChecks int

	// Signer signs every record this node originates (deltas, full
	// states, leave intents) with the node key; Verifier decides which
	// members proved a fleet node identity. A record is believed only if
	// its owner's chain verifies and its signature checks, so a member
	// without a valid identity contributes nothing, whether or not it
	// holds the gossip key. Both are required unless Unsigned is set.
	Signer   Signer
	Verifier Verifier
	// Unsigned turns record signing off: every member is believed, as
	// before signing existed. For tests and benchmarks only; a fleet
	// always sets Signer and Verifier.
	Unsigned bool
	// TrustRecheckInterval is how often cached chains are verified again
	// (a certificate may expire); a change of the Verifier's
	// TrustGeneration (roots rotated) re-verifies them at the next
	// maintenance tick. Default 1m.
	TrustRecheckInterval time.Duration
	// Reserved names this node's own listeners. An endpoint whose address
	// is one of them is refused at Register and dropped from this node's
	// view when a peer publishes it (the data plane must never be pointed
	// at the admin, CA, raft or gossip port, nor loop into itself). nil =
	// no address is reserved.
	Reserved Reserver

	// Transport replaces memberlist's UDP+TCP transport (tests use an
	// in-memory one). nil = a memberlist.NetTransport on BindAddr.
	Transport memberlist.NodeAwareTransport

	// Logger receives the catalog's and memberlist's logs; nil discards.
	Logger *slog.Logger
	// Registerer, if set, receives the catalog's metrics.
	Registerer prometheus.Registerer
}

// DefaultConfig returns a Config with every default filled in; Name and
// Network still have to be set.
func DefaultConfig() Config {
	return Config{
		ClusterID:            "meshgate",
		BindAddr:             "0.0.0.0:7946",
		GossipInterval:       100 * time.Millisecond,
		GossipNodes:          4,
		ProbeInterval:        500 * time.Millisecond,
		ProbeTimeout:         250 * time.Millisecond,
		SuspicionMult:        4,
		RetransmitMult:       6,
		PushPullInterval:     30 * time.Second,
		TCPTimeout:           10 * time.Second,
		SyncInterval:         time.Second,
		MaintenanceInterval:  500 * time.Millisecond,
		TombstoneTTL:         5 * time.Minute,
		GossipToTheDeadTime:  30 * time.Second,
		ReconnectInterval:    10 * time.Second,
		ReconnectTimeout:     72 * time.Hour,
		MaxEndpoints:         10000,
		MaxChecks:            32,
		TrustRecheckInterval: time.Minute,
	}
}

// Validate reports the first problem with c.
func (c *Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("catalog: config %s: %s", field, fmt.Sprintf(format, args...))
	}
	if r := validName(c.Name, maxNameLen); r != "" {
		return bad("Name", "%s", r)
	}
	if r := validName(c.ClusterID, maxNameLen); r != "" {
		return bad("ClusterID", "%s", r)
	}
	if r := validName(c.Network, MaxNetworkLen); r != "" {
		return bad("Network", "%s", r)
	}
	if c.Transport == nil && c.BindAddr == "" {
		return bad("BindAddr", "empty")
	}
	for i, k := range c.Keys {
		if err := checkKey(k); err != nil {
			return bad(fmt.Sprintf("Keys[%d]", i), "%v", err)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"GossipInterval", c.GossipInterval}, {"ProbeInterval", c.ProbeInterval},
		{"ProbeTimeout", c.ProbeTimeout}, {"PushPullInterval", c.PushPullInterval},
		{"TCPTimeout", c.TCPTimeout}, {"SyncInterval", c.SyncInterval},
		{"MaintenanceInterval", c.MaintenanceInterval}, {"TombstoneTTL", c.TombstoneTTL},
		{"GossipToTheDeadTime", c.GossipToTheDeadTime},
		{"TrustRecheckInterval", c.TrustRecheckInterval},
	} {
		if d.v <= 0 {
			return bad(d.name, "must be positive")
		}
	}
	if c.ReconnectInterval == 0 {
		return bad("ReconnectInterval", "must be set (negative turns reconnecting off)")
	}
	if c.ReconnectInterval > 0 && c.ReconnectTimeout <= 0 {
		return bad("ReconnectTimeout", "must be positive")
	}
	if !c.Unsigned && (c.Signer == nil || c.Verifier == nil) {
		return bad("Signer", "Signer and Verifier are required (Unsigned turns record signing off, for tests only)")
	}
	if c.ProbeTimeout >= c.ProbeInterval {
		return bad("ProbeTimeout", "must be below ProbeInterval")
	}
	for _, n := range []struct {
		name string
		v    int
	}{
		{"GossipNodes", c.GossipNodes}, {"SuspicionMult", c.SuspicionMult},
		{"RetransmitMult", c.RetransmitMult}, {"MaxEndpoints", c.MaxEndpoints},
		{"MaxChecks", c.MaxChecks},
	} {
		if n.v <= 0 {
			return bad(n.name, "must be positive")
		}
	}
	m := Meta{ProtocolVersion: ProtocolVersion, ClusterID: c.ClusterID, Network: c.Network,
		GatewayAddr: c.GatewayAddr, BridgeAddr: c.BridgeAddr, RaftAddr: c.RaftAddr, LabelsDigest: LabelsDigest(c.Labels)}
	if _, err := m.Encode(); err != nil {
		return bad("meta", "%v", err)
	}
	return nil
}

// ResolveAddr resolves a "host:port" whose host may be a go-sockaddr
// template (`{{ GetPrivateIP }}:7946`, `{{ GetInterfaceIP "eth0" }}:8300`)
// to a literal "host:port". The template must yield exactly one address.
func ResolveAddr(s string) (string, error) {
	host, port, err := splitTemplateHostPort(s)
	if err != nil {
		return "", err
	}
	if strings.Contains(host, "{{") {
		out, err := template.Parse(host)
		if err != nil {
			return "", fmt.Errorf("%w: template %q: %w", ErrAddr, host, err)
		}
		fields := strings.Fields(out)
		if len(fields) != 1 {
			return "", fmt.Errorf("%w: template %q gave %d addresses, want 1", ErrAddr, host, len(fields))
		}
		host = fields[0]
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", fmt.Errorf("%w: port %q in %q", ErrAddr, port, s)
	} else {
		port = strconv.FormatUint(p, 10)
	}
	return net.JoinHostPort(host, port), nil
}

// splitTemplateHostPort splits "host:port" where host may be a template
// containing colons and brackets; the port follows the last "}}" or the
// last colon.
func splitTemplateHostPort(s string) (host, port string, err error) {
	if i := strings.LastIndex(s, "}}"); i >= 0 {
		rest := s[i+2:]
		if !strings.HasPrefix(rest, ":") {
			return "", "", fmt.Errorf("%w: %q has no port after the template", ErrAddr, s)
		}
		return s[:i+2], rest[1:], nil
	}
	host, port, err = net.SplitHostPort(s)
	if err != nil {
		return "", "", fmt.Errorf("%w: %w", ErrAddr, err)
	}
	return host, port, nil
}
