package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshgate/meshgate/cluster"
	"github.com/meshgate/meshgate/cmd/meshgate/internal/agent"
	"github.com/meshgate/meshgate/config"
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
	var err error
	switch {
	case n.TLS.CertFile != "":
		cfg.TLS, err = agent.FileTLS(n.TLS.CertFile, n.TLS.KeyFile, n.TLS.CAFile)
	case n.Bootstrap && len(n.Join) == 0:
		// One node on its own: nobody else ever dials raft.
		cfg.TLS, err = agent.SelfSignedTLS(n.Name)
	default:
		err = fmt.Errorf("node.yaml: tls.cert_file, tls.key_file and tls.ca_file are required for a fleet (raft runs over mutual TLS)")
	}
	return cfg, err
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

// addCluster makes the fleet a source of resources and endpoints and a
// component of the node.
func addCluster(cfg *agent.Config, cl *agent.Cluster) {
	cfg.Sources = append(cfg.Sources, cl)
	cfg.Endpoints = append(cfg.Endpoints, cl)
	cfg.Components = append(cfg.Components, cl)
}
