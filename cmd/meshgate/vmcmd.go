package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshgate/meshgate/cluster/acl"
	"github.com/meshgate/meshgate/pki/client"
	"github.com/meshgate/meshgate/pki/vm"
)

// newVMCmd is "meshgate vm": what a gateway node does to onboard a
// workload VM (package pki/vm).
func newVMCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "vm", Short: "Onboard workload VMs (Istio's workload entry configure)",
		Example: `  meshgate vm bundle --namespace shop --service-account billing --network vm-net --port 9080 --out billing-bundle`}
	var (
		f                    caFlags
		a                    adminClient
		ns, sa, network, out string
		service, labels      string
		ports, subsets       []string
		vmCAAddr, vmAdmin    string
		td                   string
		ttl                  time.Duration
		force                bool
	)
	bundle := &cobra.Command{
		Use: "bundle --namespace NS --service-account SA --network NET [--out DIR]",
		Example: `  meshgate vm bundle --namespace shop --service-account billing --network vm-net --port 9080 --out billing-bundle
  meshgate vm bundle --namespace shop --service-account billing --network vm-net --port 9080:8080 --labels app=billing,version=v1 --vm-ca-addr 10.0.0.5:15012 --vm-admin-addr 10.0.0.5:15000`,
		Short: "Write a VM's bundle: Istio's VM files plus a one-use join token, an endpoints token and workload.yaml",
		Long: `Write the directory "meshgate workload join" reads on the VM. It holds what
"istioctl x workload entry configure" writes (cluster.env, mesh.yaml,
root-cert.pem, istio-token, hosts), a one-use join token (join-token, the
same secret as istio-token) for spiffe://<td>/ns/NS/sa/SA, an admin token
that may only register the bundle's service (endpoints-token, scope
endpoints:write), a WorkloadEntry template (workload.yaml) and
meshgate.yaml naming the gateway addresses. The directory is written to a
temp dir beside --out and renamed, mode 0700: copy it to the VM over a
channel you trust.

Run it on a node: the join token is minted with the node's admin.key and
the endpoints token with its operator.token. The trust domain is read from
the certificate API's own certificate unless --trust-domain is given.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				out = sa + "-bundle"
			}
			if !force {
				if _, err := os.Lstat(out); err == nil {
					return fmt.Errorf("%s already exists; pass --force to replace it", out)
				}
			}
			var ps []vm.Port
			for _, p := range ports {
				pp, err := vm.ParsePort(p)
				if err != nil {
					return fmt.Errorf("--port: %w", err)
				}
				ps = append(ps, pp)
			}
			lbl, err := vm.ParseLabels(labels)
			if err != nil {
				return fmt.Errorf("--labels: %w", err)
			}
			cadm, err := f.admin()
			if err != nil {
				return err
			}
			token, from, err := acl.ClientToken(acl.TokenSources{Flag: a.token, Env: os.Getenv(acl.EnvToken), File: a.tokenFile, EnvFile: os.Getenv(acl.EnvTokenFile), DataDir: f.dataDir})
			if err != nil {
				return err
			}
			if token == "" {
				return fmt.Errorf("the endpoints token is minted with an operator token and none was found: pass --admin-token, set %s, or run on a node whose data dir holds %s", acl.EnvToken, acl.OperatorTokenFile)
			}
			caAddr, adminAddr := orValue(vmCAAddr, f.addr), orValue(vmAdmin, a.addr)
			for _, x := range []struct{ flag, addr string }{{"--vm-ca-addr", caAddr}, {"--vm-admin-addr", adminAddr}} {
				if host, _, err := net.SplitHostPort(x.addr); err == nil {
					if ip, err := netip.ParseAddr(host); err == nil && (ip.IsLoopback() || ip.IsUnspecified()) {
						fmt.Fprintf(cmd.ErrOrStderr(), "warning: the bundle names %s, which a VM cannot reach; pass %s with the address the VM dials\n", x.addr, x.flag)
					}
				}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			// The name the API's certificate answers to (its address, or
			// istiod's name as Istio's VMs use it) and its trust domain.
			serverName, serverTD, err := vm.ServerIdentity(ctx, f.addr, cadm.Config.RootCAs)
			if err != nil {
				return f.endpoint().reach(err)
			}
			cadm.Config.ServerName = serverName
			if td == "" {
				td = serverTD
			}
			roots, err := client.FetchRoots(ctx, cadm.Config)
			if err != nil {
				return f.endpoint().reach(err)
			}
			spec := vm.Spec{TrustDomain: td, Namespace: ns, ServiceAccount: sa, Network: network, Service: service,
				Ports: ps, Labels: lbl, CAAddr: caAddr, AdminAddr: adminAddr}
			if serverName == vm.IstiodName {
				spec.CAServerName = vm.IstiodName
			}
			b, err := vm.Make(ctx, vm.MakeRequest{Spec: spec, Roots: roots, JoinTokenTTL: ttl, Subsets: subsets}, cadm, vm.Admin{Addr: a.addr, Token: token})
			if err != nil {
				var ae *vm.AdminError
				if errors.As(err, &ae) {
					return fmt.Errorf("%w (operator token from %s)", err, from)
				}
				return f.endpoint().reach(err)
			}
			if err := vm.WriteBundle(out, b, force); err != nil {
				return fmt.Errorf("%w (revoke the unused tokens: meshgate token revoke %s; meshgate acl token revoke %s)", err, b.JoinTokenID, b.EndpointsTokenID)
			}
			id, _ := b.Identity()
			fmt.Fprintf(cmd.OutOrStdout(), "bundle for %s (service %s, network %s) written to %s; join token %s expires %s\n",
				id, b.Service, b.Network, out, b.JoinTokenID, b.JoinTokenExpires.Format(time.RFC3339))
			return nil
		},
	}
	bundle.Flags().StringVar(&ns, "namespace", "", "namespace of the VM's identity")
	bundle.Flags().StringVar(&sa, "service-account", "", "service account of the VM's identity")
	bundle.Flags().StringVar(&network, "network", "", "the VM's network (ISTIO_META_NETWORK; its endpoints' network)")
	bundle.Flags().StringVar(&out, "out", "", "bundle directory to create (default SA-bundle)")
	bundle.Flags().StringVar(&service, "service", "", "service host the VM registers under (default SA.NS.svc.cluster.local)")
	bundle.Flags().StringSliceVar(&ports, "port", nil, "service port the VM serves, PORT or SERVICE_PORT:TARGET_PORT (repeatable)")
	bundle.Flags().StringVar(&labels, "labels", "", "workload labels, k=v,k2=v2")
	bundle.Flags().StringSliceVar(&subsets, "subset", nil, "SERVICE/SUBSET the VM's labels may claim (repeatable; default none)")
	bundle.Flags().StringVar(&vmCAAddr, "vm-ca-addr", "", "certificate API address as the VM reaches it (default --ca-addr)")
	bundle.Flags().StringVar(&vmAdmin, "vm-admin-addr", "", "admin API address as the VM reaches it (default --admin)")
	bundle.Flags().StringVar(&td, "trust-domain", "", "trust domain (default: read from the certificate API's certificate)")
	bundle.Flags().DurationVar(&ttl, "token-ttl", vm.DefaultJoinTokenTTL, "how long the join token may be spent")
	bundle.Flags().BoolVar(&force, "force", false, "replace an existing --out directory")
	for _, n := range []string{"namespace", "service-account", "network", "port"} {
		_ = bundle.MarkFlagRequired(n)
	}
	f.register(bundle)
	a.register(bundle)
	cmd.AddCommand(bundle)
	return cmd
}

func orValue(v, d string) string {
	if v != "" {
		return v
	}
	return d
}

// newWorkloadCmd is "meshgate workload": what runs on the VM.
func newWorkloadCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "workload", Short: "Run on a workload VM: join the mesh from a bundle",
		Example: `  meshgate workload join /etc/meshgate/bundle --advertise '{{ GetPrivateIP }}'`}
	cfg := vm.DefaultJoinConfig()
	var check, logLevel string
	join := &cobra.Command{
		Use: "join BUNDLE_DIR [--cert-dir DIR] [--advertise TEMPLATE] [--check tcp|http:/PATH]",
		Example: `  meshgate workload join /etc/meshgate/bundle --advertise '{{ GetPrivateIP }}'
  meshgate workload join ./billing-bundle --cert-dir /etc/certs --advertise '{{ GetPrivateInterfaces | include "network" "10.0.0.0/8" | attr "address" }}' --check http:/healthz`,
		Short: "Get the workload certificate, keep it renewed and keep the VM's endpoints registered (runs until SIGTERM)",
		Long: `Join the mesh from a bundle written by "meshgate vm bundle", and stay joined.

The certificate goes to --cert-dir (default /etc/certs, where Istio's VM
agent reads cert-chain.pem, key.pem and root-cert.pem with
PROV_CERT=OUTPUT_CERTS=/etc/certs). A valid certificate already there is
used and renewed with itself before it expires; the bundle's one-use join
token is spent only when there is none, so a restart, a reboot or an
expired token do not lose the identity.

The VM's endpoints (one per bundle port, at the --advertise address) are
registered with the gateway's admin API with the bundle's endpoints token,
carrying a health check the gateway runs (--check), with a lease (--ttl)
refreshed every ttl/3. SIGTERM or SIGINT withdraws them and exits 0.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.BundleDir = args[0]
			switch {
			case check == "tcp":
				cfg.Check.HTTPPath = ""
			case strings.HasPrefix(check, "http:"):
				cfg.Check.HTTPPath = strings.TrimPrefix(check, "http:")
			default:
				return fmt.Errorf("--check %q: want tcp or http:/PATH", check)
			}
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			cfg.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: lvl}))
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			w, err := vm.Join(ctx, cfg)
			if err != nil {
				return err
			}
			cur, src := w.Certificate()
			fmt.Fprintf(cmd.OutOrStdout(), "joined as %s (certificate from %s, until %s) at %s; certificates in %s; endpoints %s\n",
				cur.Identity, src, cur.Chain[0].NotAfter.Format(time.RFC3339), w.Addr(), filepath.Clean(cfg.CertDir), strings.Join(w.EndpointIDs(), ","))
			if err := w.Run(ctx); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "endpoints withdrawn")
			return nil
		},
	}
	join.Flags().StringVar(&cfg.CertDir, "cert-dir", vm.DefaultCertDir, "where cert-chain.pem, key.pem (0600) and root-cert.pem are kept (Istio's VM agent reads /etc/certs)")
	join.Flags().StringVar(&cfg.Advertise, "advertise", "", "the VM's address the gateway dials: an IP or a go-sockaddr template giving exactly one")
	join.Flags().StringVar(&check, "check", "tcp", "health check the gateway runs against each endpoint: tcp, or http:/PATH (2xx passes)")
	join.Flags().DurationVar(&cfg.Check.Interval, "check-interval", cfg.Check.Interval, "time between checks")
	join.Flags().DurationVar(&cfg.Check.Timeout, "check-timeout", cfg.Check.Timeout, "timeout of one check")
	join.Flags().IntVar(&cfg.Check.Failures, "check-failures", cfg.Check.Failures, "consecutive failures that withdraw an endpoint")
	join.Flags().DurationVar(&cfg.TTL, "ttl", cfg.TTL, "registration lease, refreshed every ttl/3")
	join.Flags().DurationVar(&cfg.CertTTL, "cert-ttl", 0, "certificate lifetime to ask for (0 = the CA's default, 24h)")
	join.Flags().Float64Var(&cfg.RenewFraction, "renew-fraction", cfg.RenewFraction, "renew after this fraction of the certificate's lifetime")
	join.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	_ = join.MarkFlagRequired("advertise")
	cmd.AddCommand(join)
	return cmd
}
