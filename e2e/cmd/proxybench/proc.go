package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// stopGrace is how long a proxy gets to exit after SIGTERM before SIGKILL.
const stopGrace = 5 * time.Second

// errExited says a proxy process ended while it should be serving.
var errExited = errors.New("proxybench: proxy process exited")

// tailBuffer keeps the last max bytes written to it. Safe for concurrent use.
type tailBuffer struct {
	mu  sync.Mutex // guards buf
	buf []byte
	max int
}

// Write appends p, dropping the oldest bytes beyond max.
func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

// String returns what is kept.
func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// proc is one proxy process, started in its own process group so that its
// workers are stopped with it. Close is idempotent and returns once the
// process has been reaped.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *tailBuffer
	done chan struct{} // closed when the process has been reaped
	err  error         // the wait result; read only after done

	closeOnce sync.Once
}

// startProc runs bin with args in dir; env is added to this process's
// environment. Output is kept (the last 16 KiB) for error messages.
func startProc(name, bin string, args, env []string, dir string) (*proc, error) {
	p := &proc{name: name, out: &tailBuffer{max: 16 << 10}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	// Own process group: Close signals the group (nginx workers included).
	// Pdeathsig: the proxy dies with this program even if it is killed.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("proxybench: start %s: %w", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// PID is the process ID.
func (p *proc) PID() int { return p.cmd.Process.Pid }

// exitError returns errExited with the exit status and the last output, or
// nil while the process runs.
func (p *proc) exitError() error {
	select {
	case <-p.done:
		return fmt.Errorf("%w: %s: %v\n%s", errExited, p.name, p.err, p.out.String())
	default:
		return nil
	}
}

// Close sends SIGTERM to the process group, waits up to stopGrace, then
// sends SIGKILL, and waits for the process to be reaped.
func (p *proc) Close() error {
	p.closeOnce.Do(func() {
		pgid := p.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(stopGrace):
		}
		// Workers may outlive a master that exited: always sweep the group.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	})
	return nil
}
