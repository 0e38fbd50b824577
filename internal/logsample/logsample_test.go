package logsample

import (
	"bytes"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"
)

var nAttr = regexp.MustCompile(`[ .]n=(\d+)`)

// lines returns the "n=" values (grouped or not) of the text records in b.
func lines(b *bytes.Buffer) []string {
	var got []string
	for _, m := range nAttr.FindAllStringSubmatch(b.String(), -1) {
		got = append(got, m[1])
	}
	return got
}

func TestSampleEvery(t *testing.T) {
	for _, tc := range []struct {
		every uint64
		want  string
	}{
		{0, "0 1 2 3 4 5 6"},
		{1, "0 1 2 3 4 5 6"},
		{3, "0 3 6"},
		{7, "0"},
		{100, "0"},
	} {
		t.Run(fmt.Sprint(tc.every), func(t *testing.T) {
			var b bytes.Buffer
			log := slog.New(New(slog.NewTextHandler(&b, &slog.HandlerOptions{
				ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
					if a.Key == slog.TimeKey {
						return slog.Attr{}
					}
					return a
				},
			}), tc.every))
			for i := range 7 {
				log.Info("connection", "n", i)
			}
			if got := strings.Join(lines(&b), " "); got != tc.want {
				t.Errorf("every %d passed records %q, want %q\n%s", tc.every, got, tc.want, b.String())
			}
		})
	}
}

// Records below the wrapped handler's level are not counted: Handle never
// sees them, so they do not shift the sample.
func TestSampleSkipsDisabledAndSharesCount(t *testing.T) {
	var b bytes.Buffer
	root := slog.New(New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelInfo}), 2))
	a, g := root.With("src", "a"), root.WithGroup("grp")
	a.Info("x", "n", 0)   // passed (1st)
	root.Debug("dropped") // disabled: not counted
	g.Info("x", "n", 1)   // dropped (2nd)
	a.Info("x", "n", 2)   // passed (3rd)
	g.Info("x", "n", 3)   // dropped (4th)
	g.Info("x", "n", 4)   // passed (5th)
	out := b.String()
	if got := strings.Join(lines(&b), " "); got != "0 2 4" {
		t.Errorf("passed %q, want records 0, 2 and 4:\n%s", got, out)
	}
	if !strings.Contains(out, "src=a n=2") || !strings.Contains(out, "grp.n=4") {
		t.Errorf("derived handlers lost their attrs or group:\n%s", out)
	}
}

// Under concurrent logging exactly ceil(total/every) records pass.
func TestSampleConcurrent(t *testing.T) {
	var mu sync.Mutex
	var b bytes.Buffer
	log := slog.New(New(slog.NewTextHandler(&lockedWriter{&mu, &b}, nil), 10))
	var wg sync.WaitGroup
	const workers, each = 8, 125
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				log.Info("connection", "n", w*each+i)
			}
		}()
	}
	wg.Wait()
	if got, want := strings.Count(b.String(), "msg=connection"), (workers*each+9)/10; got != want {
		t.Errorf("%d of %d records passed with every=10, want %d", got, workers*each, want)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
