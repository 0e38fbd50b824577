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
type caFlags struct {
	addr     string
	rootCert string
	dataDir  string
	timeout  time.Duration
}

func (f *caFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.addr, "ca-addr", "127.0.0.1:15012", "certificate API address")
	cmd.Flags().StringVar(&f.rootCert, "root-cert", "", "mesh root bundle that verifies the API (default DATA_DIR/root-cert.pem)")
	cmd.Flags().StringVar(&f.dataDir, "data-dir", defaultDataDir(), "the node's data dir (holds root-cert.pem and admin.key)")
	cmd.Flags().DurationVar(&f.timeout, "timeout", 30*time.Second, "how long one call may take")
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
		return client.Config{}, fmt.Errorf("mesh root bundle: %w", err)
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
		return client.Admin{}, fmt.Errorf("admin key: %w (run on a node, or pass --data-dir)", err)
	}
	return client.Admin{Config: cfg, Key: strings.TrimSpace(string(key))}, nil
}

func newTokenCmd() *cobra.Command {
	var f caFlags
	cmd := &cobra.Command{Use: "token", Short: "Create, list and revoke workload join tokens"}
	var ns, sa string
	var ttl time.Duration
	var uses int
	create := &cobra.Command{
		Use:   "create --namespace NS --service-account SA",
		Short: "Mint a bearer token that may obtain spiffe://<td>/ns/NS/sa/SA (only its hash is stored)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := f.admin()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			tok, err := a.CreateToken(ctx, ns, sa, ttl, uses)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok.Secret)
			fmt.Fprintf(cmd.ErrOrStderr(), "token %s for %s, expires %s\n", tok.ID, tok.Identity, tok.ExpiresAt.Format(time.RFC3339))
			return nil
		},
	}
	create.Flags().StringVar(&ns, "namespace", "", "namespace of the identity")
	create.Flags().StringVar(&sa, "service-account", "", "service account of the identity")
	create.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid")
	create.Flags().IntVar(&uses, "uses", 1, "how many certificates it may obtain (0 = unlimited within its TTL)")
	_ = create.MarkFlagRequired("namespace")
	_ = create.MarkFlagRequired("service-account")
	f.register(create)

	var lf caFlags
	list := &cobra.Command{
		Use: "list", Short: "List tokens (never their secrets)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := lf.admin()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), lf.timeout)
			defer cancel()
			toks, err := a.ListTokens(ctx)
			if err != nil {
				return err
			}
			return client.WriteTokens(cmd.OutOrStdout(), toks, time.Now())
		},
	}
	lf.register(list)

	var rf caFlags
	revoke := &cobra.Command{
		Use: "revoke ID", Short: "Revoke a token by its id (or a unique prefix)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := rf.admin()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), rf.timeout)
			defer cancel()
			tok, err := a.RevokeToken(ctx, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked %s (%s)\n", tok.ID, tok.Identity)
			return nil
		},
	}
	rf.register(revoke)
	cmd.AddCommand(create, list, revoke)
	return cmd
}

func newCertCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "cert", Short: "Obtain and renew workload certificates (Istio's VM file layout)"}

	var f caFlags
	var tokenFile, ns, sa, out, td string
	var ttl time.Duration
	issue := &cobra.Command{
		Use:   "issue --token FILE --namespace NS --service-account SA --out DIR",
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
				return err
			}
			if err := client.WriteBundle(out, b); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s until %s\n", out, b.Identity, b.Chain[0].NotAfter.Format(time.RFC3339))
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
		Use:   "renew --out DIR",
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
				return err
			}
			if err := client.WriteBundle(rout, b); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s renewed until %s\n", rout, b.Identity, b.Chain[0].NotAfter.Format(time.RFC3339))
			return nil
		},
	}
	renew.Flags().StringVar(&rout, "out", "", "folder holding the current key.pem and cert-chain.pem")
	renew.Flags().DurationVar(&rttl, "ttl", 0, "certificate lifetime (0 = the CA's default)")
	_ = renew.MarkFlagRequired("out")
	rf.register(renew)
	cmd.AddCommand(issue, renew)
	return cmd
}

func newCACmd() *cobra.Command {
	cmd := &cobra.Command{Use: "ca", Short: "Show or initialise the built-in CA"}
	var f caFlags
	show := &cobra.Command{
		Use: "show", Short: "Print the roots the certificate API serves", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.config()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			roots, err := client.FetchRoots(ctx, cfg)
			if err != nil {
				return err
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
		Use:   "init",
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
	initCmd.Flags().StringVar(&dataDir, "data-dir", defaultDataDir(), "the node's data dir")
	initCmd.Flags().StringVar(&td, "trust-domain", "cluster.local", "trust domain (the root's O=)")
	initCmd.Flags().StringVar(&plugin, "plugin-dir", "", "Istio cacerts folder: ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem")
	initCmd.Flags().StringVar(&alg, "key-algorithm", string(pki.DefaultConfig().KeyAlgorithm), "root key algorithm: ecdsa-p256 or rsa-2048")
	var ra adminClient
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Rotate a self-signed root: new root, cross-signed; both are trusted until every old leaf has expired",
		Args:  cobra.NoArgs,
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
	cmd.AddCommand(show, initCmd, rotate)
	return cmd
}
