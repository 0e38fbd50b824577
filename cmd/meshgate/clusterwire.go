package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshgate/meshgate/cluster"
	"github.com/meshgate/meshgate/cluster/catalog"
	"github.com/meshgate/meshgate/cluster/kek"
	"github.com/meshgate/meshgate/cmd/meshgate/internal/agent"
	"github.com/meshgate/meshgate/config"
	"github.com/meshgate/meshgate/mtls"
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

// recordTrust is how the catalog signs this node's records and decides
// which members proved a fleet node identity: with the node's own
// certificate and the roots raft trusts. Enrolled identities must be one
// of tls.peer_identities (default: the node's own identity); with
// certificate files, any chain to tls.ca_file is a node, as raft admits
// it, unless tls.peer_identities narrows it.
func recordTrust(n *config.Node, tlsCfg *tls.Config, ident *nodeid.Identity) (*mtls.Records, error) {
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
	if t := meshTerminator(n, tlsCfg, ident, log); t != nil {
		cfg.MeshIdentity = t
	}
	if cfg.Bridge, ccfg.BridgeAddr, err = bridgeSetup(n, tlsCfg, ident, log, cfg.Registry); err != nil {
		return nil, err
	}
	if err := gossipKeys(ctx, n, ident, &ccfg, log); err != nil {
		return nil, err
	}
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
		err := kek.Request(rctx, cl.Node(), ident, filepath.Join(caCfg.DataDir, agent.KEKFile))
		cancel()
		if err != nil {
			log.Warn("no key-encryption key: this node runs no CA (copy data_dir/kek from the first node to enable it)", "data_dir", caCfg.DataDir, "err", err)
			return nil, nil
		}
		log.Info("key-encryption key received from the fleet")
	}
	caCfg.Store = agent.NewRaftCAStore(cl.Node())
	if ident != nil {
		h, err := cluster.NewKeyringHandler(cluster.KeyringHandlerConfig{
			Keys: cl.Node().LocalKeys, Roots: ident.Source().Roots, Authorizer: ident.Authorizer(),
			Logger: log, Registerer: cfg.Registry,
		})
		if err != nil {
			return nil, err
		}
		caCfg.Routes = map[string]http.Handler{cluster.KeyringPath: h}
	}
	if err := addCAServerNames(n, &caCfg); err != nil {
		return nil, err
	}
	caCfg.Workloads = agent.NewWorkloadRegistrar(cl.Node().Catalog())
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
		cfg.Components = append(cfg.Components, kek.NewGranter(cl.Node(), ident, filepath.Join(caCfg.DataDir, agent.KEKFile), log))
	}
	return ca, nil
}

// GossipKeyringFile is where, under the data dir, a node keeps the gossip
// keys it runs with (0600), so it rejoins gossip after a restart without
// asking anyone for them.
const GossipKeyringFile = "gossip.keyring"

// keyringFetchFor bounds how long a joining node retries an unreachable CA
// for the gossip keyring.
const keyringFetchFor = 30 * time.Second

// gossipKeys decides the gossip keys a fleet node starts with, before it
// gossips with anyone: gossip.keyring_file if set; else the keys kept in
// the data dir by an earlier run; else, for a node that enrolled with a
// token, the fleet's keyring fetched over mutual TLS from tls.ca_addr with
// the new node certificate; else, for the fleet's first node, a new
// 32-byte key published as the fleet keyring. Nodes with certificate files
// and no keyring_file have no authenticated source of a key (a
// bootstrap_expect fleet gossips before raft exists): they run in the
// clear, loudly. gossip.encrypt: false turns all of this off.
func gossipKeys(ctx context.Context, n *config.Node, ident *nodeid.Identity, ccfg *cluster.Config, log *slog.Logger) error {
	if !n.Gossip.EncryptGossip() {
		if n.Gossip.KeyringFile != "" {
			return fmt.Errorf("node.yaml: gossip.encrypt is false but gossip.keyring_file is set; remove one")
		}
		ccfg.Gossip.Keys = nil
		log.Warn("gossip encryption is off (gossip.encrypt: false): any host that reaches the gossip port can join the membership")
		return nil
	}
	if n.DataDir != "" {
		ccfg.KeyringFile = filepath.Join(n.DataDir, GossipKeyringFile)
	}
	if len(ccfg.Gossip.Keys) > 0 {
		return nil // gossip.keyring_file
	}
	if ccfg.KeyringFile != "" {
		if _, err := os.Stat(ccfg.KeyringFile); err == nil {
			log.Info("gossip keys loaded from the data dir", "file", ccfg.KeyringFile)
			return nil // cluster.New reads it
		}
	}
	switch {
	case ident != nil && n.TLS.TokenFile != "" && n.TLS.CAAddr != "":
		keys, err := fetchGossipKeys(ctx, n.TLS.CAAddr, ident, log)
		if err != nil {
			return fmt.Errorf("gossip keyring from tls.ca_addr %s: %w", n.TLS.CAAddr, err)
		}
		if len(keys) == 0 {
			log.Warn("the fleet does not encrypt gossip; this node gossips in the clear too", "ca", n.TLS.CAAddr)
			return nil
		}
		ccfg.Gossip.Keys = keys
		log.Info("gossip keyring received over mutual TLS", "ca", n.TLS.CAAddr, "keys", len(keys))
	case n.Bootstrap:
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return fmt.Errorf("gossip key: %w", err)
		}
		ccfg.Gossip.Keys = [][]byte{key}
		ccfg.SeedKeyring = true
		log.Info("gossip key made for the new fleet")
	default:
		log.Warn("GOSSIP IS NOT ENCRYPTED: this node has certificate files and no gossip.keyring_file, so nobody can hand it a key; any host that reaches the gossip port can join the membership. Set gossip.keyring_file (meshgate keyring generate) on every node, or gossip.encrypt: false to silence this")
	}
	return nil
}

// fetchGossipKeys asks the CA at addr for the fleet keyring with the
// node's certificate, retrying (bounded) while the CA cannot be reached.
func fetchGossipKeys(ctx context.Context, addr string, ident *nodeid.Identity, log *slog.Logger) ([][]byte, error) {
	deadline := time.Now().Add(keyringFetchFor)
	for {
		keys, err := cluster.FetchKeyring(ctx, cluster.FetchKeyringConfig{
			Addr: addr, RootCAs: ident.Source().Roots(), Certificate: ident.Source().Certificate(),
		})
		if err == nil || errors.Is(err, cluster.ErrKeyringRefused) || errors.Is(err, cluster.ErrKeyringResponse) || time.Now().After(deadline) {
			return keys, err
		}
		log.Info("CA not reachable for the gossip keyring; retrying", "ca", addr, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// kekWait bounds how long a joining node waits for the fleet's KEK.
const kekWait = 30 * time.Second

// addCAServerNames adds to c the names and addresses the certificate
// API's server certificate carries besides its defaults: node.yaml's
// ca.server_names and the node's listen and advertised addresses (see
// config.Node.CAServerNames), so the CLI and VMs on other hosts verify it
// by the address they dial.
func addCAServerNames(n *config.Node, c *agent.CAConfig) error {
	dns, ips, err := n.CAServerNames()
	if err != nil {
		return fmt.Errorf("node.yaml: certificate API server names: %w", err)
	}
	c.DNSNames = append(c.DNSNames, dns...)
	c.IPs = append(c.IPs, ips...)
	return nil
}

// addCluster makes the fleet a source of resources and endpoints and a
// component of the node.
func addCluster(cfg *agent.Config, cl *agent.Cluster) {
	cfg.Sources = append(cfg.Sources, cl)
	cfg.Endpoints = append(cfg.Endpoints, cl)
	cfg.Components = append(cfg.Components, cl)
}
