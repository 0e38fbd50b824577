package catalog

import (
	"bytes"
	"context"
	"log"
	"log/slog"
)

// LogWriter adapts libraries that log through the standard log package
// with "[LEVEL]" prefixes (memberlist, and raft through hclog) to slog: it
// picks the level from the prefix and drops the prefix. Each Write is one
// line.
type LogWriter struct {
	Logger *slog.Logger
}

// Write implements io.Writer.
func (w LogWriter) Write(p []byte) (int, error) {
	line := bytes.TrimRight(p, "\r\n")
	level := slog.LevelInfo
	for _, l := range []struct {
		tag   string
		level slog.Level
	}{
		{"[ERR]", slog.LevelError}, {"[ERROR]", slog.LevelError},
		{"[WARN]", slog.LevelWarn}, {"[INFO]", slog.LevelInfo},
		{"[DEBUG]", slog.LevelDebug}, {"[TRACE]", slog.LevelDebug - 4},
	} {
		if i := bytes.Index(line, []byte(l.tag)); i >= 0 && i < 40 {
			level = l.level
			line = bytes.TrimSpace(line[i+len(l.tag):])
			break
		}
	}
	if w.Logger.Enabled(context.Background(), level) {
		w.Logger.Log(context.Background(), level, string(line))
	}
	return len(p), nil
}

// StdLogger returns a standard-library logger that writes to l through
// LogWriter, for libraries that take a *log.Logger.
func StdLogger(l *slog.Logger) *log.Logger {
	return log.New(LogWriter{Logger: l}, "", 0)
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
