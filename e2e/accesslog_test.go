package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// accessLines returns the access-log lines (msg "connection") the agent
// has written so far, decoded from its JSON log.
func accessLines(p *proc) []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(p.out.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "connection" {
			out = append(out, m)
		}
	}
	return out
}

// TestAccessLogNormalClosesAreEOF: connections through the binary that end
// normally (a Go TLS client closing after its answer, openssl s_client at
// the end of its input, each with close_notify then FIN, and the backend
// closing its side in turn) are logged close=eof, never close=error.
func TestAccessLogNormalClosesAreEOF(t *testing.T) {
	ca := newTestCA(t)
	_, _, params := twoVersions(t, ca)
	m := newMesh(t, ca, params)
	ctx := t.Context()
	const goClients = 5
	for i := range goClients {
		if id, err := ask(ctx, m.passAddr, "reviews.example.test", nil, nil, ""); err != nil || id == "" {
			t.Fatalf("connection %d through the passthrough listener = %q, %v", i, id, err)
		}
	}
	want := goClients
	if openssl, err := exec.LookPath("openssl"); err == nil {
		caFile := filepath.Join(t.TempDir(), "ca.pem")
		if err := os.WriteFile(caFile, ca.pem, 0o600); err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			cmd := exec.CommandContext(cctx, openssl, "s_client", "-connect", m.passAddr, "-servername", "reviews.example.test",
				"-CAfile", caFile, "-verify_return_error", "-quiet", "-no_ign_eof")
			stdin, _ := cmd.StdinPipe()
			stdout, _ := cmd.StdoutPipe()
			cmd.Stderr = io.Discard
			if err := cmd.Start(); err != nil {
				cancel()
				t.Fatalf("start openssl s_client: %v", err)
			}
			_, _ = io.WriteString(stdin, "ping\n")
			line, err := bufio.NewReader(stdout).ReadString('\n') // cctx bounds the wait
			if !strings.HasSuffix(line, " ping\n") {
				t.Errorf("openssl s_client %d read %q, %v; want the backend's answer", i, line, err)
			}
			_ = stdin.Close()
			_, _ = io.Copy(io.Discard, stdout)
			if err := cmd.Wait(); err != nil {
				t.Errorf("openssl s_client %d: %v", i, err)
			}
			cancel()
		}
		want += 2
	} else {
		t.Logf("openssl not found: Go clients only")
	}
	var lines []map[string]any
	waitFor(t, 10*time.Second, "an access-log line per connection", func() bool {
		lines = accessLines(m.p)
		return len(lines) >= want
	})
	for _, l := range lines {
		if l["close"] != "eof" {
			t.Errorf("access log line %v: close=%v, want eof for a connection that ended normally", l, l["close"])
		}
	}
}
