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

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "meshgate",
		Short:         "East-west gateway for multi-network service meshes",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print the meshgate version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "meshgate", buildVersion())
		},
	})
	root.AddCommand(newDevCmd(), newAgentCmd(), newValidateCmd(), newTokenCmd(), newCertCmd(), newCACmd(),
		newApplyCmd(), newGetCmd(), newDeleteCmd(), newMembersCmd(), newJoinCmd(), newLeaveCmd(), newKeyringCmd(), newACLCmd())
	root.AddCommand(newDocCmd())
	return root
}

// errSilent makes the process exit non-zero after a command has already
// printed its own explanation.
var errSilent = errors.New("")
