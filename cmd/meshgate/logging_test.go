package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/meshgate/meshgate/config"
)

// TestAccessLogger checks node.yaml's log.access and log.access_sample
// reach the access log: off writes nothing, a sample of 3 writes the 1st
// and 4th of 6 lines, the default leaves the process logger in place.
func TestAccessLogger(t *testing.T) {
	for _, tc := range []struct {
		name string
		l    config.NodeLog
		want int
	}{
		{"default", config.DefaultNode().Log, 6},
		{"off", config.NodeLog{Format: "text", Level: "info", Access: false, AccessSample: 1}, 0},
		{"off wins over sample", config.NodeLog{Format: "text", Level: "info", Access: false, AccessSample: 2}, 0},
		{"one in 3", config.NodeLog{Format: "text", Level: "info", Access: true, AccessSample: 3}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			log, err := newLogger(&b, tc.l.Format, tc.l.Level)
			if err != nil {
				t.Fatal(err)
			}
			access := accessLogger(log, tc.l)
			if access == nil {
				access = log
			}
			for i := range 6 {
				access.Info("connection", "n", i)
			}
			if got := strings.Count(b.String(), "msg=connection"); got != tc.want {
				t.Errorf("%d access lines of 6, want %d:\n%s", got, tc.want, b.String())
			}
		})
	}
}
