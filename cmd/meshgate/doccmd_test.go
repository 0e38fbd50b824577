package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestDocsCommand runs the hidden `meshgate docs DIR` the package build
// uses: one man page per visible command, none for hidden ones, and the
// three completion scripts naming the binary.
func TestDocsCommand(t *testing.T) {
	dir := t.TempDir()
	root := newRootWith(noNodeDefaults(t))
	root.SetArgs([]string{"docs", dir})
	if err := root.Execute(); err != nil {
		t.Fatalf("meshgate docs %s: %v", dir, err)
	}
	var want []string
	walk(newRootWith(noNodeDefaults(t)), func(c *cobra.Command) {
		if c.Name() != "help" {
			want = append(want, strings.ReplaceAll(c.CommandPath(), " ", "-")+".1")
		}
	})
	for _, page := range want {
		b, err := os.ReadFile(filepath.Join(dir, "man1", page))
		if err != nil {
			t.Errorf("man page %s: %v", page, err)
			continue
		}
		if !strings.Contains(string(b), ".TH \"MESHGATE\" \"1\"") {
			t.Errorf("%s has no MESHGATE(1) title:\n%.200s", page, b)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "man1", "meshgate-docs.1")); err == nil {
		t.Error("the hidden docs command got a man page")
	}
	pages, _ := filepath.Glob(filepath.Join(dir, "man1", "*.1"))
	if len(pages) != len(want) {
		t.Errorf("%d man pages, want %d (%v)", len(pages), len(want), want)
	}
	for name, marker := range map[string]string{
		"meshgate.bash": "__start_meshgate",
		"_meshgate":     "#compdef meshgate",
		"meshgate.fish": "complete -c meshgate",
	} {
		b, err := os.ReadFile(filepath.Join(dir, "completions", name))
		if err != nil || !strings.Contains(string(b), marker) {
			t.Errorf("completion %s: %v; want it to contain %q", name, err, marker)
		}
	}
}
