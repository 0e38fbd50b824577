package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/meshgate/meshgate/config"
)

func newValidateCmd() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "validate -f PATH",
		Short: "Check Istio resources (a YAML file or a folder of them) and print every error",
		Example: `  meshgate validate -f /etc/meshgate/resources
  meshgate validate -f reviews-virtualservice.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			set, err := config.Load(path)
			if err != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), err)
				return errSilent
			}
			n := len(set.Gateways) + len(set.VirtualServices) + len(set.DestinationRules) + len(set.ServiceEntries) + len(set.WorkloadEntries)
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d resources valid (Gateway %d, VirtualService %d, DestinationRule %d, ServiceEntry %d, WorkloadEntry %d)\n",
				path, n, len(set.Gateways), len(set.VirtualServices), len(set.DestinationRules), len(set.ServiceEntries), len(set.WorkloadEntries))
			return nil
		},
	}
	cmd.Flags().StringVarP(&path, "file", "f", "", "YAML file or folder of YAML files")
	_ = cmd.MarkFlagRequired("file")
	return cmd
}
