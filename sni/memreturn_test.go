package sni

import (
	"testing"
	"time"
)

func TestMemReturnAfterDrain(t *testing.T) {
	t0 := time.Unix(1000, 0)
	steps := []struct {
		live int64
		at   time.Duration
		want bool
	}{
		{500, 0, false},         // below memReturnMin: never
		{0, time.Minute, false}, // a drain of 500 is too small
		{0, time.Minute + time.Second, false},
		{9500, 2 * time.Minute, false},
		{5000, 2*time.Minute + time.Second, false},   // not yet half
		{4000, 2*time.Minute + 2*time.Second, false}, // half, still falling
		{100, 2*time.Minute + 3*time.Second, false},  // still falling
		{100, 2*time.Minute + 4*time.Second, true},   // settled: give back
		{0, 2*time.Minute + 5*time.Second, false},    // too soon after the last
		{0, 3 * time.Minute, false},                  // the peak is 100 now
		{2000, 4 * time.Minute, false},
		{900, 4*time.Minute + time.Second, false},
		{950, 4*time.Minute + 2*time.Second, true}, // rising again, at most half of 2000
		{3000, 5 * time.Minute, false},
		{0, 5*time.Minute + time.Second, true}, // all gone at once: no need to wait
	}
	var m memReturn
	for i, s := range steps {
		if got := m.observe(s.live, t0.Add(s.at)); got != s.want {
			t.Fatalf("step %d: observe(%d, +%v) = %v, want %v (state %+v)", i, s.live, s.at, got, s.want, m)
		}
	}
}
