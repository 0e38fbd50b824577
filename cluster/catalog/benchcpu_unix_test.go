//go:build unix

package catalog_test

import (
	"syscall"
	"time"
)

// cpuMeter measures the process's CPU use (user + system) since it was
// started, in cores.
type cpuMeter struct {
	wall time.Time
	cpu  time.Duration
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPUMeter() cpuMeter { return cpuMeter{wall: time.Now(), cpu: processCPU()} }

func (m cpuMeter) cores() float64 {
	return (processCPU() - m.cpu).Seconds() / time.Since(m.wall).Seconds()
}
