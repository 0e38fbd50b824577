package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// notifySocket is the test's end of $NOTIFY_SOCKET: it records every
// datagram, with what the listeners looked like when it arrived.
type notifySocket struct {
	path string
	conn *net.UnixConn

	mu   sync.Mutex
	msgs []notifyMsg
}

type notifyMsg struct {
	state string
	bound bool      // the probed listener accepted a connection on arrival
	at    time.Time // when it arrived
}

func (m notifyMsg) String() string { return m.state }

func newNotifySocket(t *testing.T, probe func() bool) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	s := &notifySocket{path: path, conn: conn}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return // closed by Cleanup
			}
			m := notifyMsg{state: string(buf[:n]), at: time.Now()}
			if m.state == "READY=1" {
				m.bound = probe()
			}
			s.mu.Lock()
			s.msgs = append(s.msgs, m)
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return s
}

func (s *notifySocket) all() []notifyMsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]notifyMsg(nil), s.msgs...)
}

// wait returns the index of the first message at or after from that
// starts with prefix.
func (s *notifySocket) wait(t *testing.T, p *proc, from int, prefix string) int {
	t.Helper()
	idx := -1
	waitFor(t, 30*time.Second, fmt.Sprintf("notify message %q after #%d", prefix, from), func() bool {
		for i, m := range s.all() {
			if i >= from && strings.HasPrefix(m.state, prefix) {
				idx = i
				return true
			}
		}
		select {
		case <-p.done:
			t.Fatalf("meshgate exited before %q: %v; messages %q\n%s", prefix, p.err, s.all(), p.out.String())
		default:
		}
		return false
	})
	return idx
}

func monotonicUsec(t *testing.T) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return ts.Nano() / 1000
}

// TestNotifySocketLifecycle runs the real `meshgate agent` as the unit
// does (Type=notify, WatchdogSec) with NOTIFY_SOCKET pointing at a
// datagram socket the test owns, where systemd is not PID 1. It checks
// READY=1 arrives only once the Gateway listener and the admin API are
// bound, STATUS= before and after, WATCHDOG=1 pings, RELOADING=1 with a
// current MONOTONIC_USEC on SIGHUP followed by READY=1, and STOPPING=1 on
// SIGTERM with a clean exit.
func TestNotifySocketLifecycle(t *testing.T) {
	dir := t.TempDir()
	gw := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	_, gwPort, _ := net.SplitHostPort(gw)
	res := filepath.Join(dir, "resources")
	if err := os.MkdirAll(res, 0o755); err != nil {
		t.Fatal(err)
	}
	gateway := `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: cross-network-gateway, namespace: istio-system}
spec:
  selector: {istio: eastwestgateway}
  servers:
  - port: {number: ` + gwPort + `, name: tls, protocol: TLS}
    tls: {mode: AUTO_PASSTHROUGH}
    hosts: ["*.local"]
`
	node := fmt.Sprintf("name: gw-notify\nnetwork: n1\nlabels: {istio: eastwestgateway}\nadmin_addr: %s\nbind_addr: 127.0.0.1\ndata_dir: %s\ndrain_timeout: 2s\nlog: {format: text, level: info}\n",
		admin, filepath.Join(dir, "data"))
	for name, body := range map[string]string{filepath.Join(res, "gateway.yaml"): gateway, filepath.Join(dir, "node.yaml"): node} {
		if err := os.WriteFile(name, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dialable := func(addr string) bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	sock := newNotifySocket(t, func() bool { return dialable(gw) && dialable(admin) })

	const watchdog = 400 * time.Millisecond
	cmd := exec.Command(meshgateBin(t), "agent", "--config", filepath.Join(dir, "node.yaml"), "--resources", res)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock.path,
		"WATCHDOG_USEC="+strconv.FormatInt(watchdog.Microseconds(), 10), "MESHGATE_CONFIG=")
	started := time.Now()
	p := startCmd(t, dir, cmd)

	ready := sock.wait(t, p, 0, "READY=1")
	msgs := sock.all()
	// A figure, not an assertion: exec to READY=1, standalone node.
	t.Logf("start to READY=1: %v", msgs[ready].at.Sub(started).Round(time.Millisecond))
	if !msgs[ready].bound {
		t.Errorf("READY=1 arrived before %s and %s accepted connections", gw, admin)
	}
	starting := false
	for _, m := range msgs[:ready] {
		if m.state == "READY=1" {
			t.Fatalf("two READY=1 during start: %q", msgs)
		}
		starting = starting || strings.HasPrefix(m.state, "STATUS=starting")
	}
	if !starting {
		t.Errorf("no STATUS=starting... before READY=1: %q", msgs[:ready+1])
	}
	serving := sock.wait(t, p, ready, "STATUS=serving 1 listeners")
	if st := sock.all()[serving].state; !strings.Contains(st, gw) || !strings.Contains(st, "admin "+admin) {
		t.Errorf("serving status %q does not name the listener %s and the admin API %s", st, gw, admin)
	}
	// Pings every WatchdogSec/2 while the loops turn.
	w1 := sock.wait(t, p, ready, "WATCHDOG=1")
	sock.wait(t, p, w1+1, "WATCHDOG=1")

	before := monotonicUsec(t)
	from := len(sock.all())
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	rl := sock.wait(t, p, from, "RELOADING=1")
	after := monotonicUsec(t)
	st := sock.all()[rl].state
	f := strings.SplitN(st, "\n", 2)
	if len(f) != 2 || !strings.HasPrefix(f[1], "MONOTONIC_USEC=") {
		t.Fatalf("reload message %q: want RELOADING=1 and MONOTONIC_USEC= in one datagram", st)
	}
	usec, err := strconv.ParseInt(strings.TrimPrefix(f[1], "MONOTONIC_USEC="), 10, 64)
	if err != nil || usec < before || usec > after {
		t.Errorf("MONOTONIC_USEC in %q = %d (%v), want CLOCK_MONOTONIC between %d and %d", st, usec, err, before, after)
	}
	sock.wait(t, p, rl, "READY=1")

	from = len(sock.all())
	if err := p.stop(t, syscall.SIGTERM, 20*time.Second); err != nil {
		t.Errorf("meshgate exit after SIGTERM: %v\n%s", err, p.out.String())
	}
	stop := sock.wait(t, p, from, "STOPPING=1")
	t.Logf("notify messages: %q", sock.all())
	if m := sock.all()[stop:]; len(m) < 2 || !strings.HasPrefix(m[1].state, "STATUS=draining") {
		t.Errorf("after STOPPING=1 got %q, want STATUS=draining...", m)
	}
}
