package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"

	"github.com/spf13/cobra"

	"github.com/meshgate/meshgate/config"
)

// Environment variables the CLI reads when a flag is not given. The admin
// token has its own (acl.EnvToken, acl.EnvTokenFile).
const (
	envConfig   = "MESHGATE_CONFIG"    // node.yaml to take defaults from; set but empty: none
	envAddr     = "MESHGATE_ADDR"      // --admin
	envDataDir  = "MESHGATE_DATA_DIR"  // --data-dir
	envCAAddr   = "MESHGATE_CA_ADDR"   // --ca-addr
	envRootCert = "MESHGATE_ROOT_CERT" // --root-cert
)

// systemNodeFile is where deploy/install.sh puts node.yaml; the CLI reads
// it when neither --config nor MESHGATE_CONFIG names another.
const systemNodeFile = "/etc/meshgate/node.yaml"

// annNodeDefaults marks a command whose per-node flags default from the
// environment and node.yaml (see nodeDefaults.apply).
const annNodeDefaults = "meshgate/node-defaults"

// flagSourceKey is the pflag annotation that records where a per-node
// flag's value came from when the user did not type it.
const flagSourceKey = "meshgate/source"

// nodeSetting is one per-node flag: the environment variable that sets it
// and how to read it from node.yaml (nil: node.yaml has no such setting).
// fromNode returns the value and the node.yaml key it came from.
type nodeSetting struct {
	flag, env string
	fromNode  func(*config.Node) (value, key string, err error)
}

// nodeSettings are the per-node flags of the client commands, in the
// order they are resolved.
var nodeSettings = []nodeSetting{
	{flag: "admin", env: envAddr, fromNode: func(n *config.Node) (string, string, error) {
		return dialAddr(n.AdminAddr), "admin_addr", nil
	}},
	{flag: "data-dir", env: envDataDir, fromNode: func(n *config.Node) (string, string, error) {
		return n.DataDir, "data_dir", nil
	}},
	{flag: "ca-addr", env: envCAAddr, fromNode: caAddrFromNode},
	{flag: "root-cert", env: envRootCert},
}

// caAddrFromNode is where a CLI on the node reaches the certificate API:
// the node's own (ca.addr, whose empty host follows bind_addr), or, when
// the node runs no CA, the one it enrolls with (tls.ca_addr).
func caAddrFromNode(n *config.Node) (string, string, error) {
	if n.CA.Addr != "" {
		bind := ""
		if n.BindAddr != "" {
			b, err := config.ResolveBindIP("bind_addr", n.BindAddr)
			if err != nil {
				return "", "", err
			}
			bind = b
		}
		return dialAddr(n.CAListenAddr(bind)), "ca.addr", nil
	}
	return n.TLS.CAAddr, "tls.ca_addr", nil
}

// dialAddr turns a listen address into one a client on the same host can
// dial: an empty or unspecified host (":15000", "0.0.0.0:15000") becomes
// loopback. Anything else is returned as it is.
func dialAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if host == "" {
		return net.JoinHostPort("127.0.0.1", port)
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		if ip.Is4() {
			return net.JoinHostPort("127.0.0.1", port)
		}
		return net.JoinHostPort("::1", port)
	}
	return listen
}

// nodeDefaults fills the per-node flags a command was not given: from the
// flag, then the environment, then node.yaml, then the flag's built-in
// default.
type nodeDefaults struct {
	// lookupEnv reads the environment (os.LookupEnv).
	lookupEnv func(string) (string, bool)
	// systemFile is the node.yaml read when neither --config nor
	// MESHGATE_CONFIG names one and it exists (systemNodeFile).
	systemFile string
}

// osNodeDefaults reads the process environment and systemNodeFile.
func osNodeDefaults() nodeDefaults {
	return nodeDefaults{lookupEnv: os.LookupEnv, systemFile: systemNodeFile}
}

// addConfigFlag gives cmd the --config flag and marks it for apply.
func addConfigFlag(cmd *cobra.Command) {
	if cmd.Annotations == nil {
		cmd.Annotations = map[string]string{}
	}
	cmd.Annotations[annNodeDefaults] = "true"
	if cmd.Flags().Lookup("config") == nil {
		cmd.Flags().String("config", "", "the node's node.yaml, read for defaults of --admin, --data-dir and --ca-addr (default $"+envConfig+", then "+systemNodeFile+" if it exists)")
	}
}

// nodeFile is the node.yaml a command uses: --config, else
// $MESHGATE_CONFIG (set but empty means none), else systemFile when it
// exists, else none (""). A named file that does not exist is an error
// when it is loaded, not skipped.
func (d nodeDefaults) nodeFile(cmd *cobra.Command) string {
	if f := cmd.Flags().Lookup("config"); f != nil && f.Changed {
		return f.Value.String()
	}
	if v, ok := d.lookupEnv(envConfig); ok {
		return v
	}
	if d.systemFile != "" {
		if _, err := os.Stat(d.systemFile); !errors.Is(err, fs.ErrNotExist) {
			return d.systemFile
		}
	}
	return ""
}

// apply sets every per-node flag of cmd that the user did not give, from
// the environment and then from node.yaml (read only if needed, and only
// once); a flag with neither keeps its built-in default. It records each
// value's origin in the flag's annotations (see flagSource).
func (d nodeDefaults) apply(cmd *cobra.Command) error {
	var (
		node   *config.Node
		file   string
		loaded bool
	)
	load := func() error {
		if loaded {
			return nil
		}
		loaded = true
		file = d.nodeFile(cmd)
		if file == "" {
			return nil
		}
		n, err := config.LoadNode(file)
		if err != nil {
			return fmt.Errorf("%w (the CLI reads node.yaml for the flags not given; name another with --config or %s, or set %s= to read none)", err, envConfig, envConfig)
		}
		node = n
		return nil
	}
	for _, s := range nodeSettings {
		f := cmd.Flags().Lookup(s.flag)
		if f == nil || f.Changed {
			continue
		}
		if v, ok := d.lookupEnv(s.env); ok && v != "" {
			if err := setFrom(cmd, s.flag, v, "$"+s.env); err != nil {
				return err
			}
			continue
		}
		if s.fromNode == nil {
			continue
		}
		if err := load(); err != nil {
			return err
		}
		if node == nil {
			continue
		}
		v, key, err := s.fromNode(node)
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		if v == "" {
			continue
		}
		if err := setFrom(cmd, s.flag, v, key+" in "+file); err != nil {
			return err
		}
	}
	return nil
}

// setFrom sets f to v and records where v came from.
func setFrom(cmd *cobra.Command, flag, v, source string) error {
	if err := cmd.Flags().Set(flag, v); err != nil {
		return fmt.Errorf("--%s from %s: %w", flag, source, err)
	}
	return cmd.Flags().SetAnnotation(flag, flagSourceKey, []string{source})
}

// flagSource says where the value of flag came from when the user did not
// type it ("$MESHGATE_ADDR", "admin_addr in /etc/meshgate/node.yaml"), or
// "" for a flag typed on the command line or left at its default.
func flagSource(cmd *cobra.Command, flag string) string {
	if cmd == nil {
		return ""
	}
	f := cmd.Flags().Lookup(flag)
	if f == nil {
		return ""
	}
	if s := f.Annotations[flagSourceKey]; len(s) > 0 {
		return s[0]
	}
	return ""
}

// dataDirUsage is the help text of a client command's --data-dir.
func dataDirUsage(holds string) string {
	return "the node's data dir, which " + holds + "; when not given: $" + envDataDir + ", node.yaml data_dir, ./.meshgate if it exists"
}
