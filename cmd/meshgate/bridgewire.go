package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshgate/meshgate/cluster/catalog"
	"github.com/meshgate/meshgate/cmd/meshgate/internal/agent"
	"github.com/meshgate/meshgate/config"
	"github.com/meshgate/meshgate/mtls"
	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/nodeid"
	"github.com/meshgate/meshgate/sni/hbone"
)

// bridgeSetup builds the HBONE bridge of node.yaml's bridge block, or nil
// when it is off. Both ends authenticate with the node's identity: the
// enrolled certificate (which follows renewal and root rotation) or the
// tls files; a peer must be one of tls.peer_identities (default: this
// node's own identity, which every gateway of a fleet shares). It also
// returns the bridge address to gossip.
func bridgeSetup(n *config.Node, tlsCfg *tls.Config, ident *nodeid.Identity, log *slog.Logger, reg prometheus.Registerer) (*agent.BridgeConfig, string, error) {
	if n.Bridge.Addr == "" {
		return nil, "", nil
	}
	id, peers, err := nodeIdentities(n)
	if err != nil {
		return nil, "", err
	}
	if len(peers) == 0 {
		peers = []pki.Identity{id}
	}
	src, err := meshSource(tlsCfg, ident)
	if err != nil {
		return nil, "", fmt.Errorf("node.yaml bridge: %w", err)
	}
	bind := ""
	if n.BindAddr != "" {
		if bind, err = config.ResolveBindIP("bind_addr", n.BindAddr); err != nil {
			return nil, "", err
		}
	}
	listen, err := catalog.ResolveAddr(n.BridgeListenAddr(bind))
	if err != nil {
		return nil, "", fmt.Errorf("node.yaml bridge.addr: %w", err)
	}
	adv := n.BridgeAdvertiseAddr(listen)
	if adv == "" {
		return nil, "", fmt.Errorf("node.yaml bridge: cannot tell other networks where the bridge is: set bridge.advertise")
	}
	if adv, err = catalog.ResolveAddr(adv); err != nil {
		return nil, "", fmt.Errorf("node.yaml bridge.advertise: %w", err)
	}
	auth := mtls.AuthorizeOneOf(peers...)
	pc := hbone.DefaultPoolConfig()
	pc.Source, pc.Authorizer, pc.Logger, pc.Registerer = src, auth, log, reg
	sc := hbone.DefaultServerConfig()
	sc.Source, sc.Authorizer, sc.Logger, sc.Registerer = src, auth, log, reg
	if v := n.Bridge.MaxStreamsPerConn; v > 0 {
		pc.MaxStreamsPerConn = v
		sc.MaxStreamsPerConn = uint32(10 * v)
	}
	if v := n.Bridge.StreamWindow; v > 0 {
		pc.StreamWindow, sc.StreamWindow = int32(v), int32(v)
	}
	if v := n.Bridge.ConnWindow; v > 0 {
		pc.ConnWindow, sc.ConnWindow = int32(v), int32(v)
	}
	if pc.ConnWindow < pc.StreamWindow {
		pc.ConnWindow, sc.ConnWindow = pc.StreamWindow, sc.StreamWindow
	}
	return &agent.BridgeConfig{Addr: listen, Namespace: n.Bridge.Namespace, Pool: pc, Server: sc}, adv, nil
}

// meshSource is the node's mesh identity for the mTLS it serves to
// other nodes and workloads (the bridge, ISTIO_MUTUAL servers): the
// enrolled certificate, which follows renewal and root rotation, or the
// tls files.
func meshSource(tlsCfg *tls.Config, ident *nodeid.Identity) (*mtls.Source, error) {
	if ident != nil {
		return ident.Source(), nil
	}
	if tlsCfg == nil || len(tlsCfg.Certificates) == 0 {
		return nil, fmt.Errorf("no node certificate (set tls.cert_file or enroll with tls.token_file)")
	}
	if leaf := tlsCfg.Certificates[0].Leaf; leaf != nil {
		if _, err := mtls.LeafIdentity(leaf); err != nil {
			return nil, fmt.Errorf("the node certificate is not a SPIFFE certificate: tls.cert_file: %w", err)
		}
	}
	roots := tlsCfg.ClientCAs
	if roots == nil {
		roots = tlsCfg.RootCAs
	}
	return mtls.NewSource(&tlsCfg.Certificates[0], roots), nil
}

// meshTerminator is what ISTIO_MUTUAL servers terminate with: the node's
// mesh certificate, clients of the node's trust domain. nil (with the
// reason logged) when the node has no SPIFFE certificate.
func meshTerminator(n *config.Node, tlsCfg *tls.Config, ident *nodeid.Identity, log *slog.Logger) *mtls.Terminator {
	src, err := meshSource(tlsCfg, ident)
	if err != nil {
		log.Info("ISTIO_MUTUAL servers refuse connections: no mesh identity", "why", err.Error())
		return nil
	}
	return mtls.NewTerminator(src, mtls.AuthorizeTrustDomain(orDefault(n.TrustDomain, "cluster.local")))
}
