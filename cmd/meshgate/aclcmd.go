package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshgate/meshgate/cluster/acl"
)

func newACLCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "acl", Short: "Manage admin API access",
		Example: `  meshgate acl token create --scope read --out read.token
  meshgate acl token list`}
	tok := &cobra.Command{Use: "token", Short: "Create, list and revoke admin API tokens (operator scope needed)",
		Example: `  meshgate acl token create --scope endpoints:write --service reviews.default.svc.cluster.local
  meshgate acl token revoke 7c41d2aa`}
	cmd.AddCommand(tok)

	var ca adminClient
	var scopes, services, subsets []string
	var ttl time.Duration
	var desc, out string
	var force bool
	create := &cobra.Command{
		Use: "create --scope SCOPE [--service S] [--subset svc/v1] [--ttl 24h]",
		Example: `  meshgate acl token create --scope read --ttl 24h --out read.token
  meshgate acl token create --scope endpoints:write --service reviews.default.svc.cluster.local --subset reviews.default.svc.cluster.local/v1
  meshgate acl token create --scope operator --admin 10.0.0.5:15000 --out /var/lib/meshgate/operator.token`,
		Short: "Mint an admin token (read, endpoints:write or operator); the secret is printed once, only its hash is stored",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			body := map[string]any{"scopes": scopes, "description": desc}
			if len(services) > 0 {
				body["services"] = services
			}
			if len(subsets) > 0 {
				body["subsets"] = subsets
			}
			if ttl > 0 {
				body["ttl"] = ttl.String()
			}
			toFile := out != "" && out != "-"
			if toFile {
				if err := checkSecretOut(out, force); err != nil {
					return err
				}
			}
			b, _ := json.Marshal(body)
			var res acl.Created
			if _, err := ca.do(http.MethodPost, "/v1/acl/tokens", bytes.NewReader(b), &res); err != nil {
				return err
			}
			if !toFile {
				fmt.Fprintln(cmd.OutOrStdout(), res.Secret)
				fmt.Fprintf(cmd.ErrOrStderr(), "token %s created (scopes %s); the secret above is shown only once\n", res.Token.ID, joinScopes(res.Token.Scopes))
				return nil
			}
			if err := writeSecret(out, res.Secret, force); err != nil {
				return fmt.Errorf("token %s was created but not written (revoke it with meshgate acl token revoke %s): %w", res.Token.ID, res.Token.ID, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "token %s (scopes %s) written to %s (mode 0600)\n", res.Token.ID, joinScopes(res.Token.Scopes), out)
			return nil
		},
	}
	create.Flags().StringSliceVar(&scopes, "scope", nil, "read, endpoints:write or operator (repeatable)")
	create.Flags().StringSliceVar(&services, "service", nil, "endpoints:write: a service host the token may register (repeatable; default any declared service)")
	create.Flags().StringSliceVar(&subsets, "subset", nil, "endpoints:write: SERVICE/SUBSET (or *) the token's registrations may claim (repeatable; default none)")
	create.Flags().DurationVar(&ttl, "ttl", 0, "expiry (default never)")
	create.Flags().StringVar(&desc, "description", "", "free text shown by list")
	create.Flags().StringVar(&out, "out", "", "write the secret to this file (mode 0600) instead of stdout")
	create.Flags().BoolVar(&force, "force", false, "with --out, replace an existing file")
	_ = create.MarkFlagRequired("scope")
	ca.register(create)

	var la adminClient
	list := &cobra.Command{
		Use: "list", Short: "List admin tokens (IDs, scopes, restrictions, expiry; never secrets)", Args: cobra.NoArgs,
		Example: `  meshgate acl token list`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var ts []acl.Token
			if _, err := la.do(http.MethodGet, "/v1/acl/tokens", nil, &ts); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSCOPES\tSERVICES\tSUBSETS\tEXPIRES\tDESCRIPTION")
			for _, t := range ts {
				exp := "never"
				if !t.Expires.IsZero() {
					exp = t.Expires.Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, joinScopes(t.Scopes), orDefault(strings.Join(t.Services, ","), "-"), orDefault(strings.Join(t.Subsets, ","), "-"), exp, t.Description)
			}
			return tw.Flush()
		},
	}
	la.register(list)

	var ra adminClient
	revoke := &cobra.Command{
		Use: "revoke ID", Short: "Revoke an admin token at every node", Args: cobra.ExactArgs(1),
		Example: `  meshgate acl token revoke 7c41d2aa`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := ra.do(http.MethodDelete, "/v1/acl/tokens/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "token %s revoked\n", args[0])
			return nil
		},
	}
	ra.register(revoke)
	tok.AddCommand(create, list, revoke)
	return cmd
}

func joinScopes(s []acl.Scope) string {
	var out []string
	for _, x := range s {
		out = append(out, string(x))
	}
	return strings.Join(out, ",")
}
