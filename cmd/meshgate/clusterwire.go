package main

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshgate/meshgate/cluster"
	"github.com/meshgate/meshgate/cluster/catalog"
	"github.com/meshgate/meshgate/cmd/meshgate/internal/agent"
	"github.com/meshgate/meshgate/config"
	"github.com/meshgate/meshgate/mtls"
	"github.com/meshgate/meshgate/pki"
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
		keys, err := readKeyring(n.Gossip.KeyringFile)
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
func raftTLS(ctx context.Context, n *config.Node, log *slog.Logger) (*tls.Config, *agent.NodeIdentity, error) {
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
	ni, err := agent.NewNodeIdentity(ctx, agent.IdentityConfig{
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

// recordTrust is how the catalog signs this node's records and decides
// which members proved a fleet node identity: with the node's own
// certificate and the roots raft trusts. Enrolled identities must be one
// of tls.peer_identities (default: the node's own identity); with
// certificate files, any chain to tls.ca_file is a node, as raft admits
// it, unless tls.peer_identities narrows it.
func recordTrust(n *config.Node, tlsCfg *tls.Config, ident *agent.NodeIdentity) (*mtls.Records, error) {
	id, peers, err := nodeIdentities(n)
	if err != nil {
		return nil, err
	}
	if ident != nil {
		if len(peers) == 0 {
			peers = []pki.Identity{id}
		}
		return mtls.NewRecords(ident.Source(), mtls.AuthorizeOneOf(peers...)), nil
	}
	if len(tlsCfg.Certificates) == 0 {
		return nil, fmt.Errorf("node.yaml tls: no node certificate to sign gossip records with")
	}
	roots := tlsCfg.ClientCAs
	if roots == nil {
		roots = tlsCfg.RootCAs
	}
	var auth mtls.Authorizer
	if len(peers) > 0 {
		auth = mtls.AuthorizeOneOf(peers...)
	}
	return mtls.NewRecords(mtls.NewSource(&tlsCfg.Certificates[0], roots), auth), nil
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

// readKeyring reads gossip keys, one standard-base64 key per line (16, 24
// or 32 bytes, as `meshgate keyring generate` prints); the first is the
// primary. Lines starting with # are comments.
func readKeyring(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("gossip keyring: %w", err)
	}
	var keys [][]byte
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(line)
		if err != nil || (len(k) != 16 && len(k) != 24 && len(k) != 32) {
			return nil, fmt.Errorf("gossip keyring %s line %d: want a base64 key of 16, 24 or 32 bytes", path, i+1)
		}
		keys = append(keys, k)
	}
	return keys, nil
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
	rec, err := recordTrust(n, tlsCfg, ident)
	if err != nil {
		return nil, err
	}
	ccfg.Gossip.Signer, ccfg.Gossip.Verifier = rec, rec
	ls := &catalog.Listeners{}
	ccfg.Gossip.Reserved = ls
	cfg.Reserved = ls
	ls.Set("ca", caCfg.Addr)
	cl, err := startCluster(ctx, ccfg, log)
	if err != nil {
		return nil, err
	}
	ls.Set("raft", ccfg.RaftBind, cl.Node().RaftAddr())
	ls.Set("gossip", ccfg.Gossip.BindAddr, cl.Node().Catalog().Addr())
	addCluster(cfg, cl)
	var feed *agent.RevocationFeed
	if ident != nil {
		cfg.Components = append(cfg.Components, ident)
		// Revoked node certificates are refused at every handshake.
		feed = agent.NewRevocationFeed(cl.Node(), log, ident.Source())
		cfg.Components = append(cfg.Components, feed)
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
		err := agent.RequestKEK(rctx, cl.Node(), ident, caCfg.DataDir)
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
	if feed != nil {
		feed.AttachCA(ca.Authority())
	}
	if ident != nil {
		if err := ident.AttachCA(ctx, ca.Authority()); err != nil {
			return nil, err
		}
		cfg.Components = append(cfg.Components, agent.NewKEKGranter(cl.Node(), ident, caCfg.DataDir, log))
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
