package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// newDocCmd is the hidden `meshgate docs DIR` the package build runs: man
// pages (section 1, one per command) under DIR/man1 and shell completions
// under DIR/completions (bash, zsh, fish), all generated from the command
// tree so they never drift from it.
func newDocCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "docs DIR",
		Short:   "Write man pages and shell completions (for packaging)",
		Example: `  meshgate docs build/docs`,
		Hidden:  true,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			root := cmd.Root()
			root.DisableAutoGenTag = true // reproducible: no generation date
			man := filepath.Join(args[0], "man1")
			comp := filepath.Join(args[0], "completions")
			for _, d := range []string{man, comp} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					return err
				}
			}
			hdr := &doc.GenManHeader{Title: "MESHGATE", Section: "1", Source: "meshgate " + buildVersion(), Manual: "meshgate manual"}
			if err := doc.GenManTree(root, hdr, man); err != nil {
				return fmt.Errorf("man pages: %w", err)
			}
			for name, gen := range map[string]func(string) error{
				"meshgate.bash": func(p string) error { return root.GenBashCompletionFileV2(p, true) },
				"_meshgate":     root.GenZshCompletionFile,
				"meshgate.fish": func(p string) error { return root.GenFishCompletionFile(p, true) },
			} {
				if err := gen(filepath.Join(comp, name)); err != nil {
					return fmt.Errorf("completion %s: %w", name, err)
				}
			}
			return nil
		},
	}
}
