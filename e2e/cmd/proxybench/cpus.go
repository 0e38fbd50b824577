package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Modes, as accepted by -modes.
const (
	// modePinned runs each proxy on one CPU of its own (taskset, one worker)
	// and this program (load generator and backends) on the other CPUs.
	modePinned = "pinned"
	// modeUnpinned lets every process run anywhere with -workers workers.
	modeUnpinned = "unpinned"
)

// allModes is every mode in report order.
var allModes = []string{modePinned, modeUnpinned}

// maxCPU bounds the CPU numbers parseCPUList accepts.
const maxCPU = 4095

// parseCPUList parses a Linux CPU list such as "0-3,8,10-11" (the format of
// Cpus_allowed_list and of taskset -c) into sorted, distinct CPU numbers.
func parseCPUList(s string) ([]int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fmt.Errorf("%w: empty CPU list", errProcFormat)
	}
	var cpus []int
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := parseCPU(lo)
		if err != nil {
			return nil, fmt.Errorf("%w: CPU list %q: %v", errProcFormat, s, err)
		}
		b := a
		if isRange {
			if b, err = parseCPU(hi); err != nil {
				return nil, fmt.Errorf("%w: CPU list %q: %v", errProcFormat, s, err)
			}
			if b < a {
				return nil, fmt.Errorf("%w: CPU list %q: range %d-%d runs backwards", errProcFormat, s, a, b)
			}
		}
		for c := a; c <= b; c++ {
			cpus = append(cpus, c)
		}
	}
	slices.Sort(cpus)
	return slices.Compact(cpus), nil
}

// parseCPU parses one CPU number in [0, maxCPU].
func parseCPU(s string) (int, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("CPU %q is not a number", s)
	}
	n, err := strconv.Atoi(s)
	if err != nil || n > maxCPU {
		return 0, fmt.Errorf("CPU %q not in [0, %d]", s, maxCPU)
	}
	return n, nil
}

// formatCPUList renders cpus as a comma-separated list, as taskset -c takes.
func formatCPUList(cpus []int) string {
	s := make([]string, len(cpus))
	for i, c := range cpus {
		s[i] = strconv.Itoa(c)
	}
	return strings.Join(s, ",")
}

// allowedCPUs returns the CPUs pid may run on (0: this process), from
// Cpus_allowed_list in /proc/PID/status.
func allowedCPUs(pid int) ([]int, error) {
	path := "/proc/self/status"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/status", pid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("proxybench: read %s: %w", path, err)
	}
	for line := range bytes.Lines(b) {
		if rest, ok := bytes.CutPrefix(line, []byte("Cpus_allowed_list:")); ok {
			return parseCPUList(string(rest))
		}
	}
	return nil, fmt.Errorf("%w: no Cpus_allowed_list line in %s", errProcFormat, path)
}

// pinPlan says where the processes of the pinned mode run.
type pinPlan struct {
	taskset string // path of taskset
	proxy   []int  // CPUs of the proxy
	load    []int  // CPUs of this program: clients and backends
	all     []int  // CPUs this program had at the start, restored after
}

// planPinning splits the allowed CPUs: proxyCPU (or the highest allowed CPU
// when negative) for the proxy, the others for this program. It fails with
// errUnavailable when taskset is missing or fewer than 2 CPUs are allowed.
func planPinning(allowed []int, proxyCPU int) (pinPlan, error) {
	ts := findBin("taskset")
	if ts == "" {
		return pinPlan{}, fmt.Errorf("%w: pinned mode needs taskset (Debian package util-linux)", errUnavailable)
	}
	if len(allowed) < 2 {
		return pinPlan{}, fmt.Errorf("%w: pinned mode needs 2 CPUs, this process may use %s", errUnavailable, formatCPUList(allowed))
	}
	if proxyCPU < 0 {
		proxyCPU = allowed[len(allowed)-1]
	}
	if !slices.Contains(allowed, proxyCPU) {
		return pinPlan{}, fmt.Errorf("%w: proxy CPU %d not among the allowed CPUs %s", errUnavailable, proxyCPU, formatCPUList(allowed))
	}
	load := slices.DeleteFunc(slices.Clone(allowed), func(c int) bool { return c == proxyCPU })
	return pinPlan{taskset: ts, proxy: []int{proxyCPU}, load: load, all: slices.Clone(allowed)}, nil
}

// pinSelf moves every thread of this process onto cpus (threads created
// later inherit the mask of the thread that creates them).
func pinSelf(ctx context.Context, taskset string, cpus []int) error {
	out, err := runOut(ctx, taskset, "-a", "-p", "-c", formatCPUList(cpus), strconv.Itoa(os.Getpid()))
	if err != nil {
		return fmt.Errorf("proxybench: taskset -a -p -c %s self: %v: %s", formatCPUList(cpus), err, firstLine(out))
	}
	return nil
}

// pinnedCommand wraps bin and args in taskset -c cpus; with no cpus it
// returns them unchanged.
func pinnedCommand(taskset string, cpus []int, bin string, args []string) (string, []string) {
	if len(cpus) == 0 {
		return bin, args
	}
	return taskset, append([]string{"-c", formatCPUList(cpus), bin}, args...)
}
