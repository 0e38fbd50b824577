package main

import (
	"fmt"
	"slices"
)

// stat summarizes one figure over the runs: median, min and max.
type stat struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	// N is how many runs gave the figure.
	N int `json:"n"`
}

// summarize returns the median (the mean of the middle two for an even
// count), min and max of v, or nil when v is empty.
func summarize(v []float64) *stat {
	if len(v) == 0 {
		return nil
	}
	s := slices.Clone(v)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return &stat{Median: m, Min: s[0], Max: s[len(s)-1], N: len(s)}
}

// format renders s with the number format f as "median [min..max]", a lone
// value when all runs agree or only one ran, or "-" when absent.
func (s *stat) format(f string) string {
	if s == nil {
		return "-"
	}
	med := fmt.Sprintf(f, s.Median)
	lo, hi := fmt.Sprintf(f, s.Min), fmt.Sprintf(f, s.Max)
	if s.N < 2 || (lo == med && hi == med) {
		return med
	}
	return fmt.Sprintf("%s [%s..%s]", med, lo, hi)
}

// pairedRatios returns a[run]/b[run] for every run present in both with
// positive values: each run interleaves the peers, so a run's ratio compares
// figures taken under the same outside load.
func pairedRatios(a, b map[int]float64) []float64 {
	var out []float64
	for run, x := range a {
		if y, ok := b[run]; ok && x > 0 && y > 0 {
			out = append(out, x/y)
		}
	}
	slices.Sort(out)
	return out
}
