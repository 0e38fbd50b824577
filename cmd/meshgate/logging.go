package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/meshgate/meshgate/config"
	"github.com/meshgate/meshgate/internal/logsample"
)

// newLogger builds the process logger: format "text" or "json", level
// debug|info|warn|error.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(strings.ToUpper(orDefault(level, "info")))); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch orDefault(format, "text") {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("log format %q: want text or json", format)
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// accessLogger is the access log node.yaml's log section asks for: off
// (access: false), one connection in access_sample, or nil (every
// connection, on log).
func accessLogger(log *slog.Logger, l config.NodeLog) *slog.Logger {
	switch {
	case !l.Access:
		return slog.New(slog.DiscardHandler)
	case l.AccessSample > 1:
		return slog.New(logsample.New(log.Handler(), uint64(l.AccessSample)))
	default:
		return nil
	}
}
