package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestVMCommandsRefuseBadFlags: bad flags are refused before anything is
// minted or dialled, with the flag named.
func TestVMCommandsRefuseBadFlags(t *testing.T) {
	d := noNodeDefaults(t)
	existing := t.TempDir()
	bundle := filepath.Join(t.TempDir(), "nope")
	for _, tc := range []struct {
		args []string
		say  string
	}{
		{[]string{"vm", "bundle", "--namespace", "ns", "--service-account", "sa", "--network", "n", "--port", "9080", "--out", existing, "--ca-addr", closedAddr(t)}, existing + " already exists; pass --force"},
		{[]string{"vm", "bundle", "--namespace", "ns", "--service-account", "sa", "--network", "n", "--port", "0", "--out", filepath.Join(existing, "b"), "--ca-addr", closedAddr(t)}, "--port"},
		{[]string{"vm", "bundle", "--namespace", "ns", "--service-account", "sa", "--network", "n", "--port", "9080", "--labels", "novalue", "--out", filepath.Join(existing, "b"), "--ca-addr", closedAddr(t)}, "--labels"},
		{[]string{"vm", "bundle", "--namespace", "ns", "--service-account", "sa", "--network", "n"}, `"port" not set`},
		{[]string{"workload", "join", bundle}, `"advertise" not set`},
		{[]string{"workload", "join", bundle, "--advertise", "127.0.0.1", "--check", "icmp"}, "--check"},
		{[]string{"workload", "join", bundle, "--advertise", "0.0.0.0", "--cert-dir", t.TempDir()}, "meshgate.yaml"},
	} {
		_, _, err := runCLI(t, d, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.say) {
			t.Errorf("meshgate %s = %v, want an error saying %q", strings.Join(tc.args, " "), err, tc.say)
		}
	}
}
