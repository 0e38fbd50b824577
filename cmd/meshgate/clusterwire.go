package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshgate/meshgate/cluster"
	"github.com/meshgate/meshgate/cluster/kek"
	"github.com/meshgate/meshgate/cmd/meshgate/internal/agent"
	"github.com/meshgate/meshgate/config"
	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/nodeid"
)

// clusterEnabled reports whether node.yaml asks for a fleet: a one-node
// bootstrap, an expected server count, or peers to join.
func clusterEnabled(n *config.Node) bool {
	return n.Bootstrap || n.BootstrapExpect > 0 || len(n.Join) > 0
}

// clusterConfig maps node.yaml onto cluster.Config.
func clusterConfig(n *config.Node, log *slog.Logger, reg prometheus.Registerer, gatewayAddr string) (cluster.Config, error) {
	cfg := cluster.DefaultConfig()
	cfg.NodeName = n.Name
	cfg.Network = n.Network
	if n.ClusterID != "" {
		cfg.ClusterID = n.ClusterID
	}
	cfg.Labels = n.Labels
	cfg.DataDir = n.DataDir
	cfg.Bootstrap = n.Bootstrap
	cfg.BootstrapExpect = n.BootstrapExpect
	cfg.Join = n.Join
	cfg.GatewayAddr = gatewayAddr
	cfg.RaftBind = net.JoinHostPort(orDefault(n.Raft.Bind, "0.0.0.0"), strconv.Itoa(n.Raft.Port))
	if n.Raft.Advertise != "" {
		cfg.RaftAdvertise = net.JoinHostPort(n.Raft.Advertise, strconv.Itoa(n.Raft.Port))
	}
	cfg.Gossip.BindAddr = net.JoinHostPort(orDefault(n.Gossip.Bind, "0.0.0.0"), strconv.Itoa(n.Gossip.Port))
	if n.Gossip.Advertise != "" {
		cfg.Gossip.AdvertiseAddr = net.JoinHostPort(n.Gossip.Advertise, strconv.Itoa(n.Gossip.Port))
	}
	if n.Gossip.KeyringFile != "" {
		keys, err := cluster.ReadKeyringFile(n.Gossip.KeyringFile)
		if err != nil {
			return cfg, err
		}
		cfg.Gossip.Keys = keys
	}
	cfg.Logger = log
	cfg.Registerer = reg
	return cfg, nil
}

// raftTLS decides how this node proves who it is to its peers: its own
// certificate files; or the node identity from the built-in CA (kept in
// data_dir/node, enrolled with a join token, or self-issued by a fleet's
// first node); or, for a lone node without a CA, a throwaway self-signed
// certificate nobody else needs to trust.
func raftTLS(ctx context.Context, n *config.Node, log *slog.Logger) (*tls.Config, *nodeid.Identity, error) {
	if n.TLS.CertFile != "" {
		c, err := agent.FileTLS(n.TLS.CertFile, n.TLS.KeyFile, n.TLS.CAFile)
		return c, nil, err
	}
	lone := n.Bootstrap && len(n.Join) == 0 && n.TLS.TokenFile == ""
	if lone && n.CA.Addr == "" {
		c, err := agent.SelfSignedTLS(n.Name)
		return c, nil, err
	}
	id, peers, err := nodeIdentities(n)
	if err != nil {
		return nil, nil, err
	}
	ni, err := nodeid.New(ctx, nodeid.Config{
		DataDir: n.DataDir, Identity: id, Peers: peers,
		CAAddr: n.TLS.CAAddr, TokenFile: n.TLS.TokenFile, RootFile: n.TLS.CAFile,
		SelfIssue: n.Bootstrap && n.CA.Addr != "",
		Logger:    log,
	})
	if err != nil {
		return nil, nil, err
	}
	return ni.TLSConfig(), ni, nil
}

// nodeIdentities reads tls.identity (default
// spiffe://<td>/ns/meshgate-system/sa/meshgate) and tls.peer_identities.
func nodeIdentities(n *config.Node) (pki.Identity, []pki.Identity, error) {
	td := orDefault(n.TrustDomain, "cluster.local")
	id, err := pki.NewIdentity(td, "meshgate-system", "meshgate")
	if n.TLS.Identity != "" {
		id, err = pki.ParseIdentity(n.TLS.Identity)
	}
	if err != nil {
		return id, nil, fmt.Errorf("node.yaml tls.identity: %w", err)
	}
	var peers []pki.Identity
	for i, s := range n.TLS.PeerIdentities {
		p, err := pki.ParseIdentity(s)
		if err != nil {
			return id, nil, fmt.Errorf("node.yaml tls.peer_identities[%d]: %w", i, err)
		}
		peers = append(peers, p)
	}
	return id, peers, nil
}

// startCluster joins the fleet and waits (bounded) until the replicated
// store is readable, so the first route table includes its resources.
func startCluster(ctx context.Context, cfg cluster.Config, log *slog.Logger) (*agent.Cluster, error) {
	c, err := agent.NewCluster(ctx, cfg)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.Node().Sync(sctx); err != nil {
		if cfg.Bootstrap {
			c.Close()
			return nil, fmt.Errorf("cluster: %w", err)
		}
		// A node waiting for bootstrap_expect peers still serves its
		// local resources; the store's arrive when raft is up.
		log.Warn("replicated store not ready yet; starting with local resources", "err", err)
	}
	return c, nil
}

// startFleet starts what a fleet node runs besides the data plane: the
// cluster (raft and gossip) secured with the node's identity, and the CA
// when caCfg.Addr is set. The parts are added to cfg as sources and
// components; the CA is returned (nil when this node runs none).
func startFleet(ctx context.Context, n *config.Node, cfg *agent.Config, gatewayAddr string, caCfg agent.CAConfig) (*agent.CA, error) {
	log := cfg.Logger
	tlsCfg, ident, err := raftTLS(ctx, n, log)
	if err != nil {
		return nil, err
	}
	ccfg, err := clusterConfig(n, log, cfg.Registry, gatewayAddr)
	if err != nil {
		return nil, err
	}
	ccfg.TLS = tlsCfg
	cl, err := startCluster(ctx, ccfg, log)
	if err != nil {
		return nil, err
	}
	addCluster(cfg, cl)
	if ident != nil {
		cfg.Components = append(cfg.Components, ident)
	}
	if caCfg.Addr == "" {
		return nil, nil
	}
	if ident != nil && n.TLS.TokenFile != "" && !agent.HasKEK(caCfg.DataDir) {
		// The CA key in the replicated store is sealed with the fleet's
		// KEK. A node that joined with a token asks the fleet for it,
		// sealed to its node certificate; without an answer it runs no CA
		// and renews at tls.ca_addr.
		rctx, cancel := context.WithTimeout(ctx, kekWait)
		err := kek.Request(rctx, cl.Node(), ident, filepath.Join(caCfg.DataDir, agent.KEKFile))
		cancel()
		if err != nil {
			log.Warn("no key-encryption key: this node runs no CA (copy data_dir/kek from the first node to enable it)", "data_dir", caCfg.DataDir, "err", err)
			return nil, nil
		}
		log.Info("key-encryption key received from the fleet")
	}
	caCfg.Store = agent.NewRaftCAStore(cl.Node())
	caCfg.IPs = append(caCfg.IPs, nodeIPs(n)...)
	ca, err := agent.NewCA(ctx, caCfg)
	if err != nil {
		return nil, err
	}
	cfg.Components = append(cfg.Components, ca)
	if ident != nil {
		if err := ident.AttachCA(ctx, ca.Authority()); err != nil {
			return nil, err
		}
		cfg.Components = append(cfg.Components, kek.NewGranter(cl.Node(), ident, filepath.Join(caCfg.DataDir, agent.KEKFile), log))
	}
	return ca, nil
}

// kekWait bounds how long a joining node waits for the fleet's KEK.
const kekWait = 30 * time.Second

// nodeIPs are the literal IP addresses node.yaml gives this node (bind and
// advertise addresses), for the certificate API's server certificate.
func nodeIPs(n *config.Node) []net.IP {
	var ips []net.IP
	for _, s := range []string{n.BindAddr, n.Raft.Bind, n.Raft.Advertise, n.Gossip.Bind, n.Gossip.Advertise} {
		ip := net.ParseIP(s)
		if ip == nil || ip.IsUnspecified() || slices.ContainsFunc(ips, ip.Equal) {
			continue
		}
		ips = append(ips, ip)
	}
	if host, _, err := net.SplitHostPort(n.GatewayAddr); err == nil {
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() && !slices.ContainsFunc(ips, ip.Equal) {
			ips = append(ips, ip)
		}
	}
	return ips
}

// addCluster makes the fleet a source of resources and endpoints and a
// component of the node.
func addCluster(cfg *agent.Config, cl *agent.Cluster) {
	cfg.Sources = append(cfg.Sources, cl)
	cfg.Endpoints = append(cfg.Endpoints, cl)
	cfg.Components = append(cfg.Components, cl)
}
