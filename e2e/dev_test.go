package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDevPrintsCommandsThatWork runs `meshgate dev` as `make run` does and
// pastes the commands it prints into a shell.
func TestDevPrintsCommandsThatWork(t *testing.T) {
	for _, tool := range []string{"openssl", "curl", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (.ci/run installs it)", tool)
		}
	}
	dir := t.TempDir()
	// The printed commands call bin/meshgate, as from a checkout after make run.
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(meshgateBin(t), filepath.Join(dir, "bin", "meshgate")); err != nil {
		t.Fatal(err)
	}
	auto, pass, tcp, admin, caPort, mut := freePort(t), freePort(t), freePort(t), freePort(t), freePort(t), freePort(t)
	p := start(t, dir, "dev", "--ca-port", strconv.Itoa(caPort), "--mutual-port", strconv.Itoa(mut),
		"--auto-passthrough-port", strconv.Itoa(auto), "--passthrough-port", strconv.Itoa(pass),
		"--tcp-port", strconv.Itoa(tcp), "--admin-port", strconv.Itoa(admin), "--drain-timeout", "2s")
	adminAddr := fmt.Sprintf("127.0.0.1:%d", admin)
	waitReady(t, p, adminAddr)
	waitFor(t, 10*time.Second, "instructions printed", func() bool {
		return strings.Contains(p.out.String(), "Ctrl-C drains")
	})

	var cmds []string
	for _, line := range strings.Split(p.out.String(), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "curl ") || strings.HasPrefix(line, "openssl ") || strings.HasPrefix(line, "printf ") || strings.HasPrefix(line, "bin/meshgate ") {
			cmds = append(cmds, line)
		}
	}
	if len(cmds) < 13 {
		t.Fatalf("dev printed %d commands, want at least 13:\n%s", len(cmds), p.out.String())
	}
	run := func(c string) (string, error) {
		cmd := exec.Command("bash", "-c", c)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, c := range cmds {
		out, err := run(c)
		switch {
		case strings.Contains(c, "https://") && strings.HasPrefix(c, "curl"):
			if err != nil || !strings.Contains(out, "hello from reviews") {
				t.Errorf("%s\n= %v\n%s\nwant an answer from a reviews backend", c, err, out)
			}
		case strings.Contains(c, "ratings.mesh.internal") && strings.Contains(c, "-cert "):
			if err != nil || !strings.Contains(out, "hello from ratings") {
				t.Errorf("%s\n= %v\n%s\nwant ratings to answer through ISTIO_MUTUAL", c, err, out)
			}
		case strings.Contains(c, "ratings.mesh.internal"):
			// TLS 1.3 sends the server certificate before it reads the
			// client's, so the refusal is the alert that follows.
			if strings.Contains(out, "hello from ratings") || !strings.Contains(out, "alert") {
				t.Errorf("%s\n%s\nwant the handshake refused with an alert (no client certificate)", c, out)
			}
		case strings.HasPrefix(c, "printf"):
			if !strings.Contains(out, "hello from reviews v1") {
				t.Errorf("%s\n= %v\n%s\nwant reviews v1 to answer", c, err, out)
			}
		case strings.Contains(c, "unknown.default") || (strings.HasPrefix(c, "openssl") && !strings.Contains(c, "-alpn")):
			if strings.Contains(out, "BEGIN CERTIFICATE") || strings.Contains(out, "Server certificate") {
				t.Errorf("%s\ngot a server certificate; want the gateway to refuse:\n%s", c, out)
			}
		case strings.HasPrefix(c, "bin/meshgate"):
			if err != nil {
				t.Errorf("%s\n= %v\n%s", c, err, out)
			}
		case strings.HasPrefix(c, "openssl x509"):
			for _, want := range []string{"URI:spiffe://cluster.local/ns/default/sa/reviews", "critical", "Digital Signature, Key Encipherment", "TLS Web Server Authentication, TLS Web Client Authentication"} {
				if !strings.Contains(out, want) {
					t.Errorf("%s\nlacks %q:\n%s", c, want, out)
				}
			}
		case strings.HasPrefix(c, "openssl verify"):
			if err != nil || !strings.Contains(out, ": OK") {
				t.Errorf("%s\n= %v\n%s", c, err, out)
			}
		case strings.Contains(c, "/debug/explain"):
			if err != nil || !strings.Contains(out, "reviews") {
				t.Errorf("%s\n= %v\n%s", c, err, out)
			}
		case strings.Contains(c, "/metrics"):
			if err != nil || !strings.Contains(out, "meshgate_sni_refused_total") {
				t.Errorf("%s\n= %v\n%s\nwant refusal counters", c, err, out)
			}
		}
	}
	if err := p.stop(t, syscall.SIGINT, 20*time.Second); err != nil {
		t.Fatalf("dev exit after Ctrl-C = %v, want 0", err)
	}
}
