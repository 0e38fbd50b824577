package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshgate/meshgate/cluster/acl"
	"github.com/meshgate/meshgate/cmd/meshgate/internal/agent"
)

// adminClient calls a node's admin API (loopback by default) with the
// admin token from --admin-token, MESHGATE_ADMIN_TOKEN, --admin-token-file,
// MESHGATE_ADMIN_TOKEN_FILE or DATA_DIR/operator.token. --admin and
// --data-dir default from MESHGATE_ADDR and MESHGATE_DATA_DIR, then
// node.yaml (see nodeDefaults).
type adminClient struct {
	addr, token, tokenFile string
	cmd                    *cobra.Command
}

func (a *adminClient) register(cmd *cobra.Command) {
	a.cmd = cmd
	cmd.Flags().StringVar(&a.addr, "admin", "127.0.0.1:15000", "admin address of any node; when not given: $"+envAddr+", node.yaml admin_addr")
	cmd.Flags().StringVar(&a.token, "admin-token", "", "admin API token (default $"+acl.EnvToken+", then --admin-token-file, then DATA_DIR/operator.token)")
	cmd.Flags().StringVar(&a.tokenFile, "admin-token-file", "", "file holding the admin API token (default $"+acl.EnvTokenFile+")")
	if cmd.Flags().Lookup("data-dir") == nil {
		cmd.Flags().String("data-dir", defaultDataDir(), dataDirUsage("holds operator.token"))
	}
	addConfigFlag(cmd)
}

// dataDir is the command's --data-dir (shared with caFlags when a command
// has both).
func (a *adminClient) dataDir() string {
	if a.cmd == nil {
		return ""
	}
	if f := a.cmd.Flags().Lookup("data-dir"); f != nil {
		return f.Value.String()
	}
	return ""
}

// endpoint names the admin API for error messages.
func (a *adminClient) endpoint() endpoint {
	return adminEndpoint(a.addr, flagSource(a.cmd, "admin"))
}

// do sends a request and decodes a JSON answer into out (nil: raw body
// returned). A non-2xx answer becomes an error with the node's message; a
// node that cannot be connected to, one sentence saying so.
func (a *adminClient) do(method, path string, body io.Reader, out any) ([]byte, error) {
	req, err := http.NewRequest(method, "http://"+a.addr+path, body)
	if err != nil {
		return nil, fmt.Errorf("admin address %q: %w", a.addr, err)
	}
	token, from, err := acl.ClientToken(acl.TokenSources{
		Flag: a.token, Env: os.Getenv(acl.EnvToken), File: a.tokenFile, EnvFile: os.Getenv(acl.EnvTokenFile), DataDir: a.dataDir(),
	})
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if method != http.MethodGet && method != http.MethodHead {
		ct := "application/json"
		if strings.HasPrefix(path, "/v1/config") {
			ct = "application/yaml"
		}
		req.Header.Set("Content-Type", ct)
	}
	tr := &http.Transport{DialContext: (&net.Dialer{Timeout: dialTimeout}).DialContext}
	defer tr.CloseIdleConnections()
	c := &http.Client{Timeout: 60 * time.Second, Transport: tr}
	resp, err := c.Do(req)
	if err != nil {
		return nil, a.endpoint().reach(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		var e acl.ErrorBody
		if (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden) && json.Unmarshal(b, &e) == nil && e.Reason != "" {
			return nil, errors.New(acl.Explain(resp.StatusCode, e, from))
		}
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("%s", e.Error)
		}
		if resp.StatusCode == http.StatusNotFound {
			return nil, fmt.Errorf("%s %s: not found (is this node part of a fleet? node.yaml bootstrap/join)", method, path)
		}
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	if out != nil {
		return b, json.Unmarshal(b, out)
	}
	return b, nil
}

func newApplyCmd() *cobra.Command {
	var a adminClient
	var path string
	cmd := &cobra.Command{
		Use: "apply -f PATH",
		Example: `  meshgate apply -f reviews-destinationrule.yaml
  meshgate apply -f resources/`,
		Short: "Write Istio resources (a file or a folder) to the replicated store, at any node",
		Long: `apply validates every document first and writes them in one raft entry:
a bad document changes nothing. Writes at a follower are forwarded to the
leader. Resources applied here and the node's own --resources files are
merged; the same kind/namespace/name in both is refused.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			files := []string{path}
			if fi, err := os.Stat(path); err == nil && fi.IsDir() {
				files = nil
				entries, err := os.ReadDir(path)
				if err != nil {
					return err
				}
				for _, e := range entries {
					if ext := filepath.Ext(e.Name()); !e.IsDir() && !strings.HasPrefix(e.Name(), ".") && (ext == ".yaml" || ext == ".yml") {
						files = append(files, filepath.Join(path, e.Name()))
					}
				}
			}
			for _, f := range files {
				data, err := os.ReadFile(f)
				if err != nil {
					return err
				}
				var res struct {
					Index uint64 `json:"index"`
				}
				if _, err := a.do(http.MethodPut, "/v1/config?file="+url.QueryEscape(f), bytes.NewReader(data), &res); err != nil {
					fmt.Fprintln(cmd.ErrOrStderr(), err)
					return errSilent
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s applied (raft index %d)\n", f, res.Index)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&path, "file", "f", "", "YAML file or folder")
	_ = cmd.MarkFlagRequired("file")
	a.register(cmd)
	return cmd
}

func newGetCmd() *cobra.Command {
	var a adminClient
	var ns string
	cmd := &cobra.Command{
		Use: "get [KIND [NAME]]",
		Example: `  meshgate get
  meshgate get dr
  meshgate get virtualservices reviews -n default
  MESHGATE_ADDR=10.0.0.5:15000 meshgate get se`,
		Short: "Print replicated resources as YAML (KIND: " + kindList() + ", any case, plural too)",
		Args:  cobra.MaximumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			what := "resources"
			if len(args) > 0 {
				k, err := parseKind(args[0])
				if err != nil {
					return err
				}
				q.Set("kind", string(k))
				what = string(k)
			}
			if len(args) > 1 {
				q.Set("name", args[1])
			}
			if ns != "" {
				q.Set("namespace", ns)
			}
			b, err := a.do(http.MethodGet, "/v1/config?"+q.Encode(), nil, nil)
			if err != nil {
				return err
			}
			if len(bytes.TrimSpace(b)) == 0 {
				// As kubectl does: say so on stderr, keep stdout empty.
				fmt.Fprintf(cmd.ErrOrStderr(), "no %s found\n", what)
				return nil
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	}
	cmd.Flags().StringVarP(&ns, "namespace", "n", "", "only this namespace")
	a.register(cmd)
	return cmd
}

func newDeleteCmd() *cobra.Command {
	var a adminClient
	ns := "default"
	cmd := &cobra.Command{
		Use: "delete KIND NAME",
		Example: `  meshgate delete dr reviews
  meshgate delete VirtualService reviews -n bookinfo`,
		Short: "Delete one replicated resource (KIND as for get: dr, destinationrule, DestinationRules...)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := parseKind(args[0])
			if err != nil {
				return err
			}
			p := fmt.Sprintf("/v1/config/%s/%s/%s", url.PathEscape(string(k)), url.PathEscape(ns), url.PathEscape(args[1]))
			if _, err := a.do(http.MethodDelete, p, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s/%s deleted\n", k, ns, args[1])
			return nil
		},
	}
	cmd.Flags().StringVarP(&ns, "namespace", "n", ns, "namespace of the resource")
	a.register(cmd)
	return cmd
}

func newMembersCmd() *cobra.Command {
	var a adminClient
	cmd := &cobra.Command{
		Use: "members", Short: "List the fleet: name, network, address, status, raft role, version", Args: cobra.NoArgs,
		Example: `  meshgate members
  meshgate members --admin 10.0.0.5:15000`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var ms []agent.MemberView
			if _, err := a.do(http.MethodGet, "/v1/members", nil, &ms); err != nil {
				return err
			}
			sort.Slice(ms, func(i, j int) bool { return ms[i].Name < ms[j].Name })
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tNETWORK\tADDRESS\tSTATUS\tRAFT\tGATEWAY\tPROTOCOL\tTRUST")
			for _, m := range ms {
				trust := "trusted"
				if !m.Trusted {
					trust = "untrusted: " + m.TrustReason
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.Network, m.Addr, m.Status, orDefault(m.RaftRole, "-"), orDefault(m.Gateway, "-"), m.Version, trust)
			}
			return tw.Flush()
		},
	}
	a.register(cmd)
	return cmd
}

func newJoinCmd() *cobra.Command {
	var a adminClient
	cmd := &cobra.Command{
		Use: "join ADDR...", Short: "Make the node join the fleet through the gossip address of any member", Args: cobra.MinimumNArgs(1),
		Example: `  meshgate join 10.0.0.5:7946
  meshgate join gw-1.example.internal gw-2.example.internal`,
		RunE: func(cmd *cobra.Command, args []string) error {
			body, _ := json.Marshal(map[string]any{"addrs": args})
			var res struct {
				Joined int `json:"joined"`
			}
			if _, err := a.do(http.MethodPost, "/v1/join", bytes.NewReader(body), &res); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "joined through %d of %d addresses\n", res.Joined, len(args))
			return nil
		},
	}
	a.register(cmd)
	return cmd
}

func newLeaveCmd() *cobra.Command {
	var a adminClient
	cmd := &cobra.Command{
		Use:     "leave",
		Example: `  meshgate leave`,
		Short:   "Leave the fleet gracefully (peers see a departure, not a crash); stopping the node with SIGTERM drains and leaves",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := a.do(http.MethodPost, "/v1/leave", nil, nil); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "left the fleet")
			return nil
		},
	}
	a.register(cmd)
	return cmd
}

func newKeyringCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "keyring", Short: "Manage the gossip encryption keys (list, install, use, remove, generate)",
		Example: `  meshgate keyring list
  meshgate keyring install "$(meshgate keyring generate)"`}
	var la adminClient
	list := &cobra.Command{
		Use: "list", Short: "List installed keys (primary first)", Args: cobra.NoArgs,
		Example: `  meshgate keyring list`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var res struct {
				Keys  []string `json:"keys"`
				Local []string `json:"local"`
			}
			if _, err := la.do(http.MethodGet, "/v1/keyring", nil, &res); err != nil {
				return err
			}
			for _, k := range res.Keys {
				fmt.Fprintln(cmd.OutOrStdout(), k)
			}
			if !slices.Equal(res.Keys, res.Local) {
				fmt.Fprintf(cmd.ErrOrStderr(), "this node has not applied the fleet keyring yet; it holds: %s\n", strings.Join(res.Local, " "))
			}
			return nil
		},
	}
	la.register(list)
	cmd.AddCommand(list)
	for _, op := range []string{"install", "use", "remove"} {
		var a adminClient
		c := &cobra.Command{
			Use: op + " KEY", Short: op + " a base64 gossip key on every node of the fleet", Args: cobra.ExactArgs(1),
			Example: "  meshgate keyring " + op + " 3J5jZ0ZjY2I5NjRkNDY3MGE3ZGVmMzQ1Njc4OTBhYmM=",
			RunE: func(cmd *cobra.Command, args []string) error {
				body, _ := json.Marshal(map[string]string{"key": args[0]})
				if _, err := a.do(http.MethodPost, "/v1/keyring/"+op, bytes.NewReader(body), nil); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "key %sed on the fleet\n", strings.TrimSuffix(op, "e"))
				return nil
			},
		}
		a.register(c)
		cmd.AddCommand(c)
	}
	cmd.AddCommand(&cobra.Command{
		Use: "generate", Short: "Print a new random 32-byte key for a keyring file", Args: cobra.NoArgs,
		Example: `  meshgate keyring generate > /etc/meshgate/gossip.keyring`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k := make([]byte, 32)
			if _, err := rand.Read(k); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), base64.StdEncoding.EncodeToString(k))
			return nil
		},
	})
	return cmd
}
