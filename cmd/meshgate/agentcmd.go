package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/meshgate/meshgate/cmd/meshgate/internal/agent"
	"github.com/meshgate/meshgate/config"
	"github.com/meshgate/meshgate/sni"
)

func newAgentCmd(d nodeDefaults) *cobra.Command {
	var resources string
	cmd := &cobra.Command{
		Use:   "agent --config node.yaml --resources PATH",
		Short: "Run a meshgate node",
		Long: `agent runs one meshgate node. node.yaml holds the node's own settings (see
README.md); --resources is a YAML file or a folder of Istio resources, re-read
on SIGHUP and whenever a file in it changes. SIGTERM drains and exits.

Without --config the node.yaml is $MESHGATE_CONFIG, else
/etc/meshgate/node.yaml when it exists, else the built-in defaults (with a
warning). A node whose resources give it no listener warns too, and serves
only its admin API (and certificate API) until a Gateway selecting its
labels arrives.`,
		Example: `  meshgate agent --config /etc/meshgate/node.yaml --resources /etc/meshgate/resources
  MESHGATE_CONFIG=/etc/meshgate/node.yaml meshgate agent --resources /etc/meshgate/resources`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			nodeFile := d.nodeFile(cmd)
			node := config.DefaultNode()
			if nodeFile != "" {
				n, err := config.LoadNode(nodeFile)
				if err != nil {
					return err
				}
				node = n
			}
			log, err := newLogger(cmd.ErrOrStderr(), node.Log.Format, node.Log.Level)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cfg := agent.DefaultConfig()
			cfg.Node = sni.NodeInfo{Name: node.Name, Network: node.Network, Labels: node.Labels}
			cfg.ResourcesPath = resources
			cfg.AdminAddr = node.AdminAddr
			bindHost := "" // bind_addr resolved; "" when unset
			if node.BindAddr != "" {
				// bind_addr may be a go-sockaddr template ({{ GetPrivateIP }}).
				bind, err := config.ResolveBindIP("bind_addr", node.BindAddr)
				if err != nil {
					return fmt.Errorf("%s: %w", nodeFile, err)
				}
				cfg.DefaultBind, bindHost = bind, bind
			}
			// A host-less ca.addr (the default) follows bind_addr.
			caAddr := node.CAListenAddr(bindHost)
			cfg.DrainTimeout = node.DrainTimeout.Duration
			if node.HelloTimeout.Duration > 0 {
				cfg.Limits.Timeout = node.HelloTimeout.Duration
			}
			cfg.Logger = log
			cfg.AccessLog = accessLogger(log, node.Log)
			logNodeSettings(log, nodeFile, node, caAddr)
			cfg.Reload = hupChannel(ctx)
			cfg.Registry = agent.NewRegistry()
			caCfg := agent.CAConfig{
				DataDir: node.DataDir, Addr: caAddr, TrustDomain: node.TrustDomain,
				NodeName: node.Name, Logger: log, Registerer: cfg.Registry,
			}
			var ca *agent.CA
			if clusterEnabled(node) {
				if ca, err = startFleet(ctx, node, &cfg, node.GatewayAddr, caCfg); err != nil {
					return err
				}
			} else if node.CA.Addr != "" {
				// A node outside any fleet keeps its CA in a local journal.
				if err := addCAServerNames(node, &caCfg); err != nil {
					return fmt.Errorf("%s: %w", nodeFile, err)
				}
				if ca, err = agent.NewCA(ctx, caCfg); err != nil {
					return err
				}
				cfg.Components = append(cfg.Components, ca)
			}
			if err := wireAdmin(ctx, &cfg, node, node.DataDir, log); err != nil {
				return err
			}
			a, err := agent.New(cfg)
			if err != nil {
				return err
			}
			wireRegistrationScope(&cfg, a, node)
			if err := a.Start(ctx); err != nil {
				return err
			}
			ready := []any{"node", node.Name, "network", node.Network, "listeners", len(a.Listeners())}
			var apis []string
			if addr := a.AdminAddr(); addr != nil {
				ready = append(ready, "admin", addr.String())
				apis = append(apis, "the admin API at "+addr.String())
			}
			if ca != nil && ca.Addr() != nil {
				ready = append(ready, "ca", ca.Addr().String())
				apis = append(apis, "the certificate API at "+ca.Addr().String())
			}
			if len(a.Listeners()) == 0 {
				why := "the resources declare no Gateway server for this node's labels"
				if resources == "" {
					why = "no --resources given"
				}
				only := "nothing"
				if len(apis) > 0 {
					only = strings.Join(apis, " and ")
				}
				var until []string
				if clusterEnabled(node) {
					until = append(until, "applied (meshgate apply)")
				}
				if resources != "" {
					until = append(until, "added under --resources")
				}
				next := "; restart it with --resources to serve traffic"
				if len(until) > 0 {
					next = ", until a Gateway selecting this node is " + strings.Join(until, " or ")
				}
				log.Warn("no listener ("+why+"): serving no mesh traffic, only "+only+next,
					"node", node.Name, "labels", node.Labels, "resources", resources)
			}
			log.Info("meshgate agent ready", ready...)
			return agent.NewSystemd(agent.SystemdConfig{Logger: log}).Serve(ctx, a)
		},
	}
	cmd.Flags().String("config", "", "node.yaml with this node's settings (default $"+envConfig+", then "+systemNodeFile+" if it exists)")
	cmd.Flags().StringVar(&resources, "resources", "", "Istio resources: a YAML file or a folder of them")
	return cmd
}

// logNodeSettings says which node.yaml the agent runs with; without one it
// warns and lists the built-in settings it will serve with.
func logNodeSettings(log *slog.Logger, nodeFile string, node *config.Node, caAddr string) {
	if nodeFile != "" {
		log.Info("node settings read", "config", nodeFile, "node", node.Name, "network", node.Network)
		return
	}
	log.Warn("no node.yaml (--config, $"+envConfig+" or "+systemNodeFile+"): running with the built-in node settings, outside any fleet",
		"node", node.Name, "network", node.Network, "admin", node.AdminAddr, "data_dir", node.DataDir, "ca", caAddr)
}
