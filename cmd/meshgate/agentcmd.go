package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/meshgate/meshgate/cmd/meshgate/internal/agent"
	"github.com/meshgate/meshgate/config"
	"github.com/meshgate/meshgate/sni"
)

func newAgentCmd() *cobra.Command {
	var nodeFile, resources string
	cmd := &cobra.Command{
		Use:   "agent --config node.yaml --resources PATH",
		Short: "Run a meshgate node",
		Long: `agent runs one meshgate node. node.yaml holds the node's own settings (see
README.md); --resources is a YAML file or a folder of Istio resources, re-read
on SIGHUP and whenever a file in it changes. SIGTERM drains and exits.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
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
			cfg.Reload = hupChannel(ctx)
			cfg.Registry = agent.NewRegistry()
			caCfg := agent.CAConfig{
				DataDir: node.DataDir, Addr: caAddr, TrustDomain: node.TrustDomain,
				NodeName: node.Name, Logger: log, Registerer: cfg.Registry,
			}
			if clusterEnabled(node) {
				if _, err := startFleet(ctx, node, &cfg, node.GatewayAddr, caCfg); err != nil {
					return err
				}
			} else if node.CA.Addr != "" {
				// A node outside any fleet keeps its CA in a local journal.
				ca, err := agent.NewCA(ctx, caCfg)
				if err != nil {
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
			log.Info("meshgate agent ready", "node", node.Name, "network", node.Network, "listeners", len(a.Listeners()))
			return agent.NewSystemd(agent.SystemdConfig{Logger: log}).Serve(ctx, a)
		},
	}
	cmd.Flags().StringVar(&nodeFile, "config", "", "node.yaml with this node's settings")
	cmd.Flags().StringVar(&resources, "resources", "", "Istio resources: a YAML file or a folder of them")
	return cmd
}
