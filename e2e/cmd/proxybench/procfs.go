package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat. The
// kernel reports it as 100 on every Linux architecture regardless of CONFIG_HZ.
const clockTicks = 100

// errProcFormat says a /proc file did not have the expected shape.
var errProcFormat = errors.New("proxybench: unexpected /proc format")

// procSample is the resource use of a process and all its descendants at one
// instant. Sums over processes: nginx runs a master and worker processes, and
// Pss divides pages they share fairly between them.
type procSample struct {
	// PIDs is how many processes were summed.
	PIDs int `json:"pids"`
	// CPUTicks is utime+stime, in clock ticks (1/100 s).
	CPUTicks uint64 `json:"cpu_ticks"`
	// PssKiB is the proportional set size from smaps_rollup.
	PssKiB uint64 `json:"pss_kib"`
	// RSSKiB is VmRSS from status.
	RSSKiB uint64 `json:"rss_kib"`
	// FDs is the number of open file descriptors.
	FDs int `json:"fds"`
}

// parseStat returns the parent PID and utime+stime from the contents of
// /proc/PID/stat. The command name (field 2) may hold spaces and parentheses,
// so fields are counted from the last ')'.
func parseStat(b []byte) (ppid int, ticks uint64, err error) {
	end := bytes.LastIndexByte(b, ')')
	if end < 0 {
		return 0, 0, fmt.Errorf("%w: stat has no command name", errProcFormat)
	}
	f := bytes.Fields(b[end+1:])
	// f[0] is field 3 (state); field N is f[N-3].
	const ppidField, utimeField, stimeField = 4, 14, 15
	if len(f) <= stimeField-3 {
		return 0, 0, fmt.Errorf("%w: stat has %d fields after the command name, want at least %d", errProcFormat, len(f), stimeField-2)
	}
	p, err := strconv.Atoi(string(f[ppidField-3]))
	if err != nil || p < 0 {
		return 0, 0, fmt.Errorf("%w: stat ppid %q", errProcFormat, f[ppidField-3])
	}
	u, err := strconv.ParseUint(string(f[utimeField-3]), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("%w: stat utime %q", errProcFormat, f[utimeField-3])
	}
	s, err := strconv.ParseUint(string(f[stimeField-3]), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("%w: stat stime %q", errProcFormat, f[stimeField-3])
	}
	if u+s < u {
		return 0, 0, fmt.Errorf("%w: stat utime+stime overflows", errProcFormat)
	}
	return p, u + s, nil
}

// parseKiB returns the value of the "key:   123 kB" line in a /proc status
// or smaps_rollup file.
func parseKiB(b []byte, key string) (uint64, error) {
	prefix := []byte(key + ":")
	for line := range bytes.Lines(b) {
		rest, ok := bytes.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, fmt.Errorf("%w: %s line %q", errProcFormat, key, bytes.TrimSpace(line))
		}
		v, err := strconv.ParseUint(string(f[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%w: %s value %q", errProcFormat, key, f[0])
		}
		return v, nil
	}
	return 0, fmt.Errorf("%w: no %s line", errProcFormat, key)
}

// processTree returns root followed by all its live descendants, found by
// reading every /proc/PID/stat once.
func processTree(root int) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("proxybench: list /proc: %w", err)
	}
	children := make(map[int][]int)
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // the process exited meanwhile
		}
		ppid, _, err := parseStat(b)
		if err != nil {
			continue
		}
		children[ppid] = append(children[ppid], pid)
	}
	tree := []int{root}
	for i := 0; i < len(tree) && len(tree) < 4096; i++ {
		tree = append(tree, children[tree[i]]...)
	}
	return tree, nil
}

// sampleTree measures root and its descendants. A descendant that exits while
// it is being read is left out; root must be readable.
func sampleTree(root int) (procSample, error) {
	pids, err := processTree(root)
	if err != nil {
		return procSample{}, err
	}
	var s procSample
	for i, pid := range pids {
		one, err := sampleOne(pid)
		if err != nil {
			if i == 0 {
				return procSample{}, err
			}
			continue
		}
		s.PIDs++
		s.CPUTicks += one.CPUTicks
		s.PssKiB += one.PssKiB
		s.RSSKiB += one.RSSKiB
		s.FDs += one.FDs
	}
	return s, nil
}

// sampleOne measures a single process.
func sampleOne(pid int) (procSample, error) {
	dir := filepath.Join("/proc", strconv.Itoa(pid))
	b, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return procSample{}, fmt.Errorf("proxybench: read stat of pid %d: %w", pid, err)
	}
	_, ticks, err := parseStat(b)
	if err != nil {
		return procSample{}, fmt.Errorf("proxybench: pid %d: %w", pid, err)
	}
	s := procSample{CPUTicks: ticks}
	b, err = os.ReadFile(filepath.Join(dir, "status"))
	if err != nil {
		return procSample{}, fmt.Errorf("proxybench: read status of pid %d: %w", pid, err)
	}
	if s.RSSKiB, err = parseKiB(b, "VmRSS"); err != nil {
		return procSample{}, fmt.Errorf("proxybench: pid %d: %w", pid, err)
	}
	// smaps_rollup exists since Linux 4.14; fall back to RSS without it.
	if b, err = os.ReadFile(filepath.Join(dir, "smaps_rollup")); err == nil {
		if s.PssKiB, err = parseKiB(b, "Pss"); err != nil {
			return procSample{}, fmt.Errorf("proxybench: pid %d: %w", pid, err)
		}
	} else {
		s.PssKiB = s.RSSKiB
	}
	fds, err := os.ReadDir(filepath.Join(dir, "fd"))
	if err != nil {
		return procSample{}, fmt.Errorf("proxybench: list fds of pid %d: %w", pid, err)
	}
	s.FDs = len(fds)
	return s, nil
}
