package liveness

import (
	"testing"
	"time"
)

func TestBeat(t *testing.T) {
	var b Beat
	if d, stuck := b.Stuck(0); stuck || d != 0 {
		t.Fatalf("idle Beat: Stuck(0) = %v, %v; want 0, false", d, stuck)
	}
	done := b.Busy()
	// Busy for some positive time: a bound of 0 is exceeded as soon as the
	// clock moves, an hour is not.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, stuck := b.Stuck(0); stuck {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("busy Beat never reported Stuck(0)")
		}
	}
	if _, stuck := b.Stuck(time.Hour); stuck {
		t.Fatal("busy Beat reported Stuck(1h) right after Busy")
	}
	done()
	if _, stuck := b.Stuck(0); stuck {
		t.Fatal("Beat still stuck after done()")
	}
}
