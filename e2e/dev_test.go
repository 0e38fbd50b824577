package e2e

import (
	"fmt"
	"os/exec"
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
	auto, pass, tcp, admin := freePort(t), freePort(t), freePort(t), freePort(t)
	p := start(t, dir, "dev",
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
		if strings.HasPrefix(line, "curl ") || strings.HasPrefix(line, "openssl ") || strings.HasPrefix(line, "printf ") {
			cmds = append(cmds, line)
		}
	}
	if len(cmds) < 6 {
		t.Fatalf("dev printed %d commands, want at least 6:\n%s", len(cmds), p.out.String())
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
		case strings.HasPrefix(c, "printf"):
			if !strings.Contains(out, "hello from reviews v1") {
				t.Errorf("%s\n= %v\n%s\nwant reviews v1 to answer", c, err, out)
			}
		case strings.Contains(c, "unknown.default") || (strings.HasPrefix(c, "openssl") && !strings.Contains(c, "-alpn")):
			if strings.Contains(out, "BEGIN CERTIFICATE") || strings.Contains(out, "Server certificate") {
				t.Errorf("%s\ngot a server certificate; want the gateway to refuse:\n%s", c, out)
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
