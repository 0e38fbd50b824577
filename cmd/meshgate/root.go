package main

import (
	"errors"
	"fmt"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is set by the linker (-X main.version=...); otherwise the module
// build info is used.
var version = ""

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "devel"
}

// versionLine is what `meshgate version` and `meshgate --version` print.
func versionLine() string { return "meshgate " + buildVersion() }

// newRoot is the meshgate command tree, reading defaults from the process
// environment and /etc/meshgate/node.yaml.
func newRoot() *cobra.Command { return newRootWith(osNodeDefaults()) }

// newRootWith is the command tree with the per-node flag defaults taken
// from d.
func newRootWith(d nodeDefaults) *cobra.Command {
	root := &cobra.Command{
		Use:   "meshgate",
		Short: "East-west gateway for multi-network service meshes",
		Long: `meshgate routes TLS by SNI between the networks of a service mesh.

The commands that talk to a node (apply, get, token, cert, members, ...)
take --admin, --ca-addr and --data-dir from the flag, then the environment
(MESHGATE_ADDR, MESHGATE_CA_ADDR, MESHGATE_DATA_DIR), then the node's
node.yaml (--config, MESHGATE_CONFIG, else /etc/meshgate/node.yaml when it
exists), then the built-in defaults; on a node they need no flags.`,
		Example: `  meshgate dev
  meshgate get dr
  meshgate --version`,
		Version:       buildVersion(),
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Annotations[annNodeDefaults] == "" {
				return nil
			}
			return d.apply(cmd)
		},
	}
	root.SetVersionTemplate("meshgate {{.Version}}\n")
	root.AddCommand(&cobra.Command{
		Use:     "version",
		Short:   "Print the meshgate version (as meshgate --version does)",
		Example: `  meshgate version`,
		Args:    cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), versionLine())
		},
	})
	root.AddCommand(newDevCmd(), newAgentCmd(d), newValidateCmd(), newTokenCmd(), newCertCmd(), newCACmd(),
		newApplyCmd(), newGetCmd(), newDeleteCmd(), newMembersCmd(), newJoinCmd(), newLeaveCmd(), newKeyringCmd(), newACLCmd(),
		newVMCmd(), newWorkloadCmd())
	root.AddCommand(newDocCmd())
	root.InitDefaultVersionFlag()
	addBuiltinExamples(root)
	return root
}

// addBuiltinExamples makes cobra's own help and completion commands now,
// so that they too carry an Example.
func addBuiltinExamples(root *cobra.Command) {
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		switch c.Name() {
		case "help":
			c.Example = "  meshgate help get"
		case "completion":
			c.Example = "  meshgate completion bash > /etc/bash_completion.d/meshgate"
			for _, sh := range c.Commands() {
				sh.Example = fmt.Sprintf("  meshgate completion %s", sh.Name())
			}
		}
	}
}

// errSilent makes the process exit non-zero after a command has already
// printed its own explanation.
var errSilent = errors.New("")
