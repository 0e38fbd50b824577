//go:build !unix

package catalog_test

// cpuMeter reports 0 where the process's CPU time is not available.
type cpuMeter struct{}

func startCPUMeter() cpuMeter { return cpuMeter{} }

func (cpuMeter) cores() float64 { return 0 }
