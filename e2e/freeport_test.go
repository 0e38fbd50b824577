package e2e

import "testing"

// TestFreePortNeverRepeats draws more ports than one e2e run uses and
// checks that none comes back twice: a repeated port is handed to two
// processes, and the one that binds second fails with "address already
// in use".
func TestFreePortNeverRepeats(t *testing.T) {
	t.Parallel()
	seen := make(map[int]bool)
	for range 1500 {
		p := freePort(t)
		if seen[p] {
			t.Fatalf("freePort returned %d twice", p)
		}
		seen[p] = true
	}
}
