package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshgate/meshgate/cmd/meshgate/internal/agent"
	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/client"
	"github.com/meshgate/meshgate/pki/store"
)

// caFlags are shared by the commands that talk to the certificate API.
// --ca-addr, --data-dir and --root-cert default from MESHGATE_CA_ADDR,
// MESHGATE_DATA_DIR and MESHGATE_ROOT_CERT, then node.yaml (see
// nodeDefaults).
type caFlags struct {
	addr     string
	rootCert string
	dataDir  string
	timeout  time.Duration
	cmd      *cobra.Command
}

func (f *caFlags) register(cmd *cobra.Command) {
	f.cmd = cmd
	cmd.Flags().StringVar(&f.addr, "ca-addr", "127.0.0.1:15012", "certificate API address; when not given: $"+envCAAddr+", node.yaml ca.addr (or tls.ca_addr)")
	cmd.Flags().StringVar(&f.rootCert, "root-cert", "", "mesh root bundle that verifies the API (default $"+envRootCert+", then DATA_DIR/root-cert.pem)")
	cmd.Flags().StringVar(&f.dataDir, "data-dir", defaultDataDir(), dataDirUsage("holds root-cert.pem and admin.key"))
	cmd.Flags().DurationVar(&f.timeout, "timeout", 30*time.Second, "how long one call may take")
	addConfigFlag(cmd)
}

// endpoint names the certificate API for error messages.
func (f *caFlags) endpoint() endpoint {
	return caEndpoint(f.addr, flagSource(f.cmd, "ca-addr"))
}

// defaultDataDir is ./.meshgate when it exists (meshgate dev), else the
// system data dir.
func defaultDataDir() string {
	if fi, err := os.Stat(".meshgate"); err == nil && fi.IsDir() {
		return ".meshgate"
	}
	return "/var/lib/meshgate"
}

func (f *caFlags) config() (client.Config, error) {
	root := f.rootCert
	if root == "" {
		root = filepath.Join(f.dataDir, agent.RootCertFile)
	}
	pool, err := client.LoadRoots(root)
	if err != nil {
		return client.Config{}, fmt.Errorf("mesh root bundle: %w (set --root-cert or %s, or --data-dir or %s to the node's data dir)", err, envRootCert, envDataDir)
	}
	return client.Config{Addr: f.addr, RootCAs: pool, Timeout: f.timeout}, nil
}

func (f *caFlags) admin() (client.Admin, error) {
	cfg, err := f.config()
	if err != nil {
		return client.Admin{}, err
	}
	key, err := os.ReadFile(filepath.Join(f.dataDir, agent.AdminKeyFile))
	if err != nil {
		return client.Admin{}, fmt.Errorf("admin key: %w (run on a node, or set --data-dir or %s)", err, envDataDir)
	}
	return client.Admin{Config: cfg, Key: strings.TrimSpace(string(key))}, nil
}

func newTokenCmd() *cobra.Command {
	var f caFlags
	cmd := &cobra.Command{Use: "token", Short: "Create, list and revoke workload join tokens",
		Example: `  meshgate token create --namespace default --service-account reviews --out reviews.token
  meshgate token list`}
	var ns, sa, tokOut string
	var ttl time.Duration
	var uses int
	var force bool
	create := &cobra.Command{
		Use: "create --namespace NS --service-account SA",
		Example: `  meshgate token create --namespace default --service-account reviews --out reviews.token
  meshgate token create --namespace default --service-account ratings --ttl 24h --uses 0 > ratings.token
  meshgate token create --namespace meshgate-system --service-account meshgate --ca-addr 10.0.0.5:15012 --out gw-2.token`,
		Short: "Mint a bearer token that may obtain spiffe://<td>/ns/NS/sa/SA (only its hash is stored)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			toFile := tokOut != "" && tokOut != "-"
			if toFile {
				if err := checkSecretOut(tokOut, force); err != nil {
					return err
				}
			}
			a, err := f.admin()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			tok, err := a.CreateToken(ctx, ns, sa, ttl, uses)
			if err != nil {
				return f.endpoint().reach(err)
			}
			if !toFile {
				fmt.Fprintln(cmd.OutOrStdout(), tok.Secret)
				fmt.Fprintf(cmd.ErrOrStderr(), "token %s for %s, expires %s\n", tok.ID, tok.Identity, tok.ExpiresAt.Format(time.RFC3339))
				return nil
			}
			if err := writeSecret(tokOut, tok.Secret, force); err != nil {
				return fmt.Errorf("token %s was created but not written (revoke it with meshgate token revoke %s): %w", tok.ID, tok.ID, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "token %s for %s written to %s (mode 0600), expires %s\n", tok.ID, tok.Identity, tokOut, tok.ExpiresAt.Format(time.RFC3339))
			return nil
		},
	}
	create.Flags().StringVar(&ns, "namespace", "", "namespace of the identity")
	create.Flags().StringVar(&sa, "service-account", "", "service account of the identity")
	create.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid")
	create.Flags().IntVar(&uses, "uses", 1, "how many certificates it may obtain (0 = unlimited within its TTL)")
	create.Flags().StringVar(&tokOut, "out", "", "write the token to this file (mode 0600) instead of stdout")
	create.Flags().BoolVar(&force, "force", false, "with --out, replace an existing file")
	_ = create.MarkFlagRequired("namespace")
	_ = create.MarkFlagRequired("service-account")
	f.register(create)

	var lf caFlags
	list := &cobra.Command{
		Use: "list", Short: "List tokens (never their secrets)", Args: cobra.NoArgs,
		Example: `  meshgate token list`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := lf.admin()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), lf.timeout)
			defer cancel()
			toks, err := a.ListTokens(ctx)
			if err != nil {
				return lf.endpoint().reach(err)
			}
			return client.WriteTokens(cmd.OutOrStdout(), toks, time.Now())
		},
	}
	lf.register(list)

	var rf caFlags
	var withCerts bool
	var tokReason string
	revoke := &cobra.Command{
		Use: "revoke ID [--certs [--reason R]]",
		Example: `  meshgate token revoke 3f2a9c1e
  meshgate token revoke 3f2a9c1e --certs --reason keyCompromise`,
		Short: "Revoke a token by its id (or a unique prefix); --certs also revokes every certificate it produced",
		Long: `Revoke a token by its id (or a unique prefix of at least 8 digits).

Without --certs, the token can obtain no more certificates, but those it
already produced stay valid until they expire and may be renewed (each
renewal bounded by the token's original grant). With --certs, every
unexpired certificate the token produced, renewals included, is revoked
too: refused at renewal and at every meshgate mTLS handshake, and listed
in the CRL (GET /v1/crl).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := rf.admin()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), rf.timeout)
			defer cancel()
			if !withCerts {
				if tokReason != "" {
					return fmt.Errorf("--reason needs --certs")
				}
				tok, err := a.RevokeToken(ctx, args[0])
				if err != nil {
					return rf.endpoint().reach(err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "revoked %s (%s)\n", tok.ID, tok.Identity)
				return nil
			}
			res, err := a.RevokeTokenCertificates(ctx, args[0], tokReason)
			if err != nil {
				return rf.endpoint().reach(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked %s (%s) and %d certificate(s)\n", res.ID, res.Identity, len(res.RevokedCertificates))
			for _, r := range res.RevokedCertificates {
				fmt.Fprintf(cmd.OutOrStdout(), "  %s %s until %s\n", r.Serial, r.Identity, r.NotAfter.Format(time.RFC3339))
			}
			return nil
		},
	}
	revoke.Flags().BoolVar(&withCerts, "certs", false, "also revoke every certificate the token produced (renewals included)")
	revoke.Flags().StringVar(&tokReason, "reason", "", "RFC 5280 reason for the certificates (keyCompromise, superseded, cessationOfOperation, ...)")
	rf.register(revoke)
	cmd.AddCommand(create, list, revoke)
	return cmd
}

func newCertCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "cert", Short: "Obtain and renew workload certificates (Istio's VM file layout)",
		Example: `  meshgate cert issue --token reviews.token --namespace default --service-account reviews --out /etc/certs
  meshgate cert renew --out /etc/certs`}

	var f caFlags
	var tokenFile, ns, sa, out, td string
	var ttl time.Duration
	issue := &cobra.Command{
		Use: "issue --token FILE --namespace NS --service-account SA --out DIR",
		Example: `  meshgate cert issue --token reviews.token --namespace default --service-account reviews --out /etc/certs
  meshgate cert issue --token reviews.token --namespace default --service-account reviews --out certs --ca-addr 10.0.0.5:15012 --root-cert root-cert.pem`,
		Short: "Get a first certificate with a join token; writes key.pem, cert-chain.pem, root-cert.pem",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.config()
			if err != nil {
				return err
			}
			tok, err := os.ReadFile(tokenFile)
			if err != nil {
				return fmt.Errorf("token: %w", err)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			b, err := client.Issue(ctx, cfg, client.IssueRequest{
				TrustDomain: td, Namespace: ns, ServiceAccount: sa, Token: strings.TrimSpace(string(tok)), TTL: ttl,
			})
			if err != nil {
				return f.endpoint().reach(err)
			}
			if err := client.WriteBundle(out, b); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s serial %s until %s\n", out, b.Identity, pki.SerialOf(b.Chain[0]), b.Chain[0].NotAfter.Format(time.RFC3339))
			return nil
		},
	}
	issue.Flags().StringVar(&tokenFile, "token", "", "file holding the join token")
	issue.Flags().StringVar(&ns, "namespace", "", "namespace of the identity")
	issue.Flags().StringVar(&sa, "service-account", "", "service account of the identity")
	issue.Flags().StringVar(&td, "trust-domain", "cluster.local", "trust domain")
	issue.Flags().StringVar(&out, "out", "", "folder for key.pem, cert-chain.pem, root-cert.pem")
	issue.Flags().DurationVar(&ttl, "ttl", 0, "certificate lifetime (0 = the CA's default, 24h)")
	for _, n := range []string{"token", "namespace", "service-account", "out"} {
		_ = issue.MarkFlagRequired(n)
	}
	f.register(issue)

	var rf caFlags
	var rout string
	var rttl time.Duration
	renew := &cobra.Command{
		Use: "renew --out DIR",
		Example: `  meshgate cert renew --out /etc/certs
  meshgate cert renew --out /etc/certs --ttl 12h`,
		Short: "Renew the certificate in DIR with itself (mTLS); same identity, new key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cur, err := client.LoadBundle(rout)
			if err != nil {
				return err
			}
			cfg, err := rf.config()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), rf.timeout)
			defer cancel()
			b, err := client.Renew(ctx, cfg, cur, rttl)
			if err != nil {
				return rf.endpoint().reach(err)
			}
			if err := client.WriteBundle(rout, b); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s renewed, serial %s until %s\n", rout, b.Identity, pki.SerialOf(b.Chain[0]), b.Chain[0].NotAfter.Format(time.RFC3339))
			return nil
		},
	}
	renew.Flags().StringVar(&rout, "out", "", "folder holding the current key.pem and cert-chain.pem")
	renew.Flags().DurationVar(&rttl, "ttl", 0, "certificate lifetime (0 = the CA's default); never more than the original issuance allowed")
	_ = renew.MarkFlagRequired("out")
	rf.register(renew)

	var vf caFlags
	var reason string
	revoke := &cobra.Command{
		Use: "revoke SERIAL [--reason R]",
		Example: `  meshgate cert revoke 5b1e0c4d9a --reason keyCompromise
  meshgate cert revoke 5B:1E:0C:4D:9A`,
		Short: "Revoke a certificate by serial (hex, as printed by cert issue/renew or openssl)",
		Long: `Revoke a certificate by its serial number (hex; openssl's colon form is accepted).

The revocation is replicated to every node: renewals with the certificate
are refused, every meshgate mTLS handshake refuses it, and the CRL at
GET /v1/crl lists it until the certificate expires.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := vf.admin()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), vf.timeout)
			defer cancel()
			r, err := a.RevokeCertificate(ctx, args[0], reason)
			if err != nil {
				return vf.endpoint().reach(err)
			}
			who := r.Identity
			if !r.Recorded {
				who = "a certificate the CA has no record of; kept for the maximum TTL"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked %s (%s, %s) until %s\n", r.Serial, who, r.Reason, r.NotAfter.Format(time.RFC3339))
			return nil
		},
	}
	revoke.Flags().StringVar(&reason, "reason", "", "RFC 5280 reason: unspecified, keyCompromise, cACompromise, affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn")
	vf.register(revoke)
	cmd.AddCommand(issue, renew, revoke)
	return cmd
}

func newCACmd() *cobra.Command {
	cmd := &cobra.Command{Use: "ca", Short: "Show or initialise the built-in CA",
		Example: `  meshgate ca show
  meshgate ca crl --out crl.der`}
	var f caFlags
	show := &cobra.Command{
		Use: "show", Short: "Print the roots the certificate API serves", Args: cobra.NoArgs,
		Example: `  meshgate ca show
  meshgate ca show --ca-addr 10.0.0.5:15012 --root-cert root-cert.pem`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.config()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			roots, err := client.FetchRoots(ctx, cfg)
			if err != nil {
				return f.endpoint().reach(err)
			}
			for i, r := range roots {
				fmt.Fprintf(cmd.OutOrStdout(), "root[%d]: %s (serial %s, %s, until %s)\n", i, r.Subject, r.SerialNumber.Text(16), r.PublicKeyAlgorithm, r.NotAfter.Format(time.RFC3339))
			}
			return nil
		},
	}
	f.register(show)

	var dataDir, td, plugin, alg string
	initCmd := &cobra.Command{
		Use: "init",
		Example: `  meshgate ca init --data-dir /var/lib/meshgate
  meshgate ca init --plugin-dir /etc/cacerts --trust-domain example.org`,
		Short: "Create the CA offline in the data dir (self-signed root, or Istio plug-in files with --plugin-dir)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := pki.DefaultConfig()
			cfg.TrustDomain = td
			cfg.PluginDir = plugin
			cfg.KeyAlgorithm = pki.KeyAlgorithm(alg)
			cfg.KEKFile = filepath.Join(dataDir, agent.KEKFile)
			if err := os.MkdirAll(dataDir, 0o700); err != nil {
				return err
			}
			st, err := store.OpenFile(filepath.Join(dataDir, agent.CAStateFile))
			if err != nil {
				return err
			}
			defer st.Close()
			info, err := client.InitCA(cmd.Context(), cfg, st)
			if err != nil {
				return err
			}
			return client.WriteCAInfo(cmd.OutOrStdout(), info)
		},
	}
	initCmd.Flags().StringVar(&dataDir, "data-dir", defaultDataDir(), dataDirUsage("will hold the CA state"))
	addConfigFlag(initCmd)
	initCmd.Flags().StringVar(&td, "trust-domain", "cluster.local", "trust domain (the root's O=)")
	initCmd.Flags().StringVar(&plugin, "plugin-dir", "", "Istio cacerts folder: ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem")
	initCmd.Flags().StringVar(&alg, "key-algorithm", string(pki.DefaultConfig().KeyAlgorithm), "root key algorithm: ecdsa-p256 or rsa-2048")
	var ra adminClient
	rotate := &cobra.Command{
		Use:     "rotate",
		Example: `  meshgate ca rotate`,
		Short:   "Rotate a self-signed root: new root, cross-signed; both are trusted until every old leaf has expired",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var res struct {
				Roots []string `json:"roots"`
			}
			if _, err := ra.do(http.MethodPost, "/v1/ca/rotate", nil, &res); err != nil {
				return err
			}
			for i, r := range res.Roots {
				fmt.Fprintf(cmd.OutOrStdout(), "root[%d]: %s\n", i, r)
			}
			return nil
		},
	}
	ra.register(rotate)

	var cf caFlags
	var crlOut string
	crl := &cobra.Command{
		Use: "crl [--out FILE]", Short: "Fetch the CRL (DER) from the certificate API; openssl crl -inform DER reads it", Args: cobra.NoArgs,
		Example: `  meshgate ca crl --out crl.der
  meshgate ca crl | openssl crl -inform DER -noout -text`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := cf.config()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), cf.timeout)
			defer cancel()
			der, err := client.FetchCRL(ctx, cfg)
			if err != nil {
				return cf.endpoint().reach(err)
			}
			if crlOut == "" || crlOut == "-" {
				_, err = cmd.OutOrStdout().Write(der)
				return err
			}
			return os.WriteFile(crlOut, der, 0o644)
		},
	}
	crl.Flags().StringVar(&crlOut, "out", "", "file to write (default stdout)")
	cf.register(crl)
	cmd.AddCommand(show, initCmd, rotate, crl)
	return cmd
}
