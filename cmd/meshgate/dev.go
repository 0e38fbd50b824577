package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshgate/meshgate/cmd/meshgate/internal/agent"
	"github.com/meshgate/meshgate/cmd/meshgate/internal/demo"
	"github.com/meshgate/meshgate/config"
	"github.com/meshgate/meshgate/sni"
)

func newDevCmd() *cobra.Command {
	var (
		dataDir   = ".meshgate"
		host      = "127.0.0.1"
		autoPort  = 15443
		passPort  = 8443
		tcpPort   = 9000
		mutPort   = 9443
		adminPort = 15000
		caPort    = 15012
		logFormat = "text"
		logLevel  = "info"
		drain     = 5 * time.Second
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a whole one-node mesh with embedded defaults: gateway, demo backends, routes",
		Example: `  meshgate dev
  meshgate dev --data-dir /tmp/meshgate-dev --admin-port 15100 --ca-port 0`,
		Long: `dev runs one meshgate node on loopback with a demo TLS service (reviews v1 and
v2), an AUTO_PASSTHROUGH listener (Istio's cross-network port), a PASSTHROUGH
listener with a weighted VirtualService, a plain TCP route, an ISTIO_MUTUAL
server terminated with the node's mesh certificate, and the admin
endpoint. It prints commands to try. Data lives under --data-dir.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(cmd.ErrOrStderr(), logFormat, logLevel)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()

			d, err := demo.Start(ctx, demo.Options{
				Dir: filepath.Join(dataDir, "demo"), Host: host,
				AutoPassthroughPort: autoPort, PassthroughPort: passPort, TCPPort: tcpPort,
				MutualPort: mutPort,
			})
			if err != nil {
				return err
			}
			cfg := agent.DefaultConfig()
			cfg.Node = sni.NodeInfo{Name: "dev", Network: "network-a", Labels: map[string]string{"istio": "eastwestgateway"}}
			cfg.ResourcesPath = d.Resources
			cfg.AdminAddr = net.JoinHostPort(host, strconv.Itoa(adminPort))
			cfg.DefaultBind = host
			cfg.DrainTimeout = drain
			cfg.Logger = log
			cfg.Reload = hupChannel(ctx)
			cfg.Registry = agent.NewRegistry()
			// A one-node fleet: raft (on loopback) holds the config applied
			// with `meshgate apply` and the CA's state.
			node := config.DefaultNode()
			node.Name, node.Network, node.Labels = cfg.Node.Name, cfg.Node.Network, cfg.Node.Labels
			node.DataDir = filepath.Join(dataDir, "state")
			node.Bootstrap = true
			node.Raft.Bind, node.Raft.Port = host, 0
			node.Gossip.Bind, node.Gossip.Port = host, 0
			caCfg := agent.CAConfig{DataDir: dataDir, NodeName: cfg.Node.Name, Logger: log, Registerer: cfg.Registry}
			node.CA.Addr = ""
			if caPort != 0 {
				caCfg.Addr = net.JoinHostPort(host, strconv.Itoa(caPort))
				node.CA.Addr = caCfg.Addr
			}
			ca, err := startFleet(ctx, node, &cfg, net.JoinHostPort(host, strconv.Itoa(autoPort)), caCfg)
			if err != nil {
				return err
			}
			if err := wireAdmin(ctx, &cfg, node, dataDir, log); err != nil {
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
			log.Info("meshgate dev ready", "node", cfg.Node.Name, "network", cfg.Node.Network, "admin", a.AdminAddr())
			fmt.Fprint(cmd.OutOrStdout(), d.Instructions(a.AdminAddr().String()))
			fmt.Fprint(cmd.OutOrStdout(), adminInstructions(dataDir, a.AdminAddr().String()))
			if ca != nil {
				fmt.Fprint(cmd.OutOrStdout(), caInstructions(dataDir, ca.Addr().String()))
				fmt.Fprint(cmd.OutOrStdout(), d.MutualInstructions(filepath.Join(dataDir, "reviews-certs")))
			}
			fmt.Fprint(cmd.OutOrStdout(), d.Footer())
			err = agent.NewSystemd(agent.SystemdConfig{Logger: log}).Serve(ctx, a)
			d.Wait()
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", dataDir, "folder for the demo CA, resources and state")
	f.StringVar(&host, "host", host, "loopback address every listener binds")
	f.IntVar(&autoPort, "auto-passthrough-port", autoPort, "AUTO_PASSTHROUGH listener port")
	f.IntVar(&passPort, "passthrough-port", passPort, "PASSTHROUGH listener port")
	f.IntVar(&tcpPort, "tcp-port", tcpPort, "plain TCP route port (0 disables)")
	f.IntVar(&mutPort, "mutual-port", mutPort, "ISTIO_MUTUAL server port (0 disables; needs the CA for workload certificates)")
	f.IntVar(&adminPort, "admin-port", adminPort, "admin listener port")
	f.IntVar(&caPort, "ca-port", caPort, "certificate API port (0 disables the CA)")
	f.StringVar(&logFormat, "log-format", logFormat, "text or json")
	f.StringVar(&logLevel, "log-level", logLevel, "debug, info, warn or error")
	f.DurationVar(&drain, "drain-timeout", drain, "how long Ctrl-C waits for connections in flight")
	return cmd
}

// caInstructions is what dev prints about its CA.
func caInstructions(dataDir, addr string) string {
	return fmt.Sprintf(`
  # the built-in CA (certificate API on %[2]s): a join token, then an ISTIO_MUTUAL workload certificate
  bin/meshgate token create --ca-addr %[2]s --data-dir %[1]s --namespace default --service-account reviews > %[1]s/reviews.token
  bin/meshgate cert issue --ca-addr %[2]s --data-dir %[1]s --token %[1]s/reviews.token --namespace default --service-account reviews --out %[1]s/reviews-certs
  openssl x509 -in %[1]s/reviews-certs/cert-chain.pem -noout -subject -ext subjectAltName,keyUsage,extendedKeyUsage
  openssl verify -CAfile %[1]s/reviews-certs/root-cert.pem %[1]s/reviews-certs/cert-chain.pem
  bin/meshgate cert renew --ca-addr %[2]s --data-dir %[1]s --out %[1]s/reviews-certs
`, dataDir, addr)
}

// adminInstructions is what dev prints about admin API access.
func adminInstructions(dataDir, addr string) string {
	return fmt.Sprintf(`
  # admin writes need a token: the node wrote an operator token to %[1]s/operator.token, which the CLI reads by default
  bin/meshgate acl token list --admin %[2]s --data-dir %[1]s
  curl -s -H "Authorization: Bearer $(cat %[1]s/operator.token)" http://%[2]s/v1/acl/tokens
`, dataDir, addr)
}

// hupChannel delivers one value per SIGHUP until ctx is done.
func hupChannel(ctx context.Context) <-chan struct{} {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP)
	out := make(chan struct{}, 1)
	go func() {
		defer signal.Stop(sig)
		for {
			select {
			case <-ctx.Done():
				return
			case <-sig:
				select {
				case out <- struct{}{}:
				default:
				}
			}
		}
	}()
	return out
}
