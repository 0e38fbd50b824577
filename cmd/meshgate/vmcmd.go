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
same secret as istio-token) for spiffe://<td>/ns/NS/sa/SA, a WorkloadEntry
template (workload.yaml) and meshgate.yaml naming the gateway address.
It also binds that identity's workload group on the CA (service, ports,
network, labels, --subset): the VM registers its endpoints at the
certificate API with its own certificate, and only those. No registration
secret is in the bundle; meshgate vm revoke unbinds it. The directory is written to a
temp dir beside --out and renamed, mode 0700: copy it to the VM over a
channel you trust.

Run it on a node: the join token and the group are made with the node's
admin.key. The trust domain is read from
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
			caAddr := orValue(vmCAAddr, f.addr)
			for _, x := range []struct{ flag, addr string }{{"--vm-ca-addr", caAddr}} {
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
				Ports: ps, Labels: lbl, CAAddr: caAddr}
			if serverName == vm.IstiodName {
				spec.CAServerName = vm.IstiodName
			}
			b, err := vm.Make(ctx, vm.MakeRequest{Spec: spec, Roots: roots, JoinTokenTTL: ttl, Subsets: subsets}, cadm, vm.Groups{Config: cadm.Config, Key: cadm.Key})
			if err != nil {
				var ae *vm.APIError
				if errors.As(err, &ae) {
					return err
				}
				return f.endpoint().reach(err)
			}
			if err := vm.WriteBundle(out, b, force); err != nil {
				return fmt.Errorf("%w (revoke what was made: meshgate vm revoke --namespace %s --service-account %s)", err, ns, sa)
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
	bundle.Flags().StringVar(&vmAdmin, "vm-admin-addr", "", "unused: the VM registers at the certificate API with its certificate")
	_ = bundle.Flags().MarkDeprecated("vm-admin-addr", "the VM registers at --vm-ca-addr with its workload certificate")
	bundle.Flags().StringVar(&td, "trust-domain", "", "trust domain (default: read from the certificate API's certificate)")
	bundle.Flags().DurationVar(&ttl, "token-ttl", vm.DefaultJoinTokenTTL, "how long the join token may be spent")
	bundle.Flags().BoolVar(&force, "force", false, "replace an existing --out directory")
	for _, n := range []string{"namespace", "service-account", "network", "port"} {
		_ = bundle.MarkFlagRequired(n)
	}
	f.register(bundle)
	// --admin, --admin-token and --admin-token-file are accepted for
	// compatibility and unused: the bundle needs only the CA's admin key.
	a.register(bundle)
	cmd.AddCommand(bundle, newVMRevokeCmd())
	return cmd
}

// newVMRevokeCmd is "meshgate vm revoke": unbind a bundle's workload group
// (and revoke its join token), so its certificate may no longer register.
func newVMRevokeCmd() *cobra.Command {
	var f caFlags
	var ns, sa string
	cmd := &cobra.Command{
		Use:     "revoke --namespace NS --service-account SA",
		Short:   "Withdraw a bundle's binding: its workload certificate may no longer register endpoints",
		Example: `  meshgate vm revoke --namespace shop --service-account billing`,
		Long: `Delete the workload group "meshgate vm bundle" bound to spiffe://<td>/ns/NS/sa/SA
and revoke its join token. From then on a certificate of that identity is
refused at PUT /v1/workload/endpoints (403 no_group); endpoints it registered
drop out of the catalog when their lease (at most 5m) ends. To stop the
certificates themselves, revoke them too (meshgate cert revoke).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cadm, err := f.admin()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			if sn, _, err := vm.ServerIdentity(ctx, f.addr, cadm.Config.RootCAs); err == nil {
				cadm.Config.ServerName = sn
			}
			g, err := vm.Groups{Config: cadm.Config, Key: cadm.Key}.Delete(ctx, ns, sa)
			if err != nil {
				return f.endpoint().reach(err)
			}
			if g.JoinTokenID != "" {
				if _, err := cadm.RevokeToken(ctx, g.JoinTokenID); err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "warning: revoking join token %s: %v\n", g.JoinTokenID, err)
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "workload group of %s/%s (service %s) unbound; join token %s revoked\n", ns, sa, g.Service, g.JoinTokenID)
			return nil
		},
	}
	cmd.Flags().StringVar(&ns, "namespace", "", "namespace of the bundle's identity")
	cmd.Flags().StringVar(&sa, "service-account", "", "service account of the bundle's identity")
	for _, n := range []string{"namespace", "service-account"} {
		_ = cmd.MarkFlagRequired(n)
	}
	f.register(cmd)
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
registered at the gateway's certificate API with the workload certificate (mTLS),
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
