package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// results is everything one run measured. It is also the JSON document of
// -json.
type results struct {
	Started  time.Time  `json:"started"`
	Host     hostInfo   `json:"host"`
	Settings settings   `json:"settings"`
	Peers    []peerInfo `json:"peers"`
	// Modes has one entry per mode measured, in report order.
	Modes []modeResult `json:"modes"`
	// Goals are the targets meshgate is held to, checked against this run.
	Goals []goal `json:"goals,omitempty"`
	// Notes explain adjustments (e.g. fewer idle connections than asked).
	Notes []string `json:"notes,omitempty"`
}

// hostInfo describes the machine.
type hostInfo struct {
	Cores     int    `json:"cores"`
	Kernel    string `json:"kernel"`
	GoVersion string `json:"go_version"`
	NoFile    uint64 `json:"nofile_limit"`
	// LoadStart and LoadEnd are /proc/loadavg at the start and the end: a
	// busy machine makes every figure noisier.
	LoadStart string `json:"loadavg_start"`
	LoadEnd   string `json:"loadavg_end"`
}

// settings repeats the knobs that shape the figures.
type settings struct {
	SampleSeconds float64 `json:"sample_seconds"`
	Runs          int     `json:"runs"`
	Workers       int     `json:"workers"`
	DetailAt      int     `json:"detail_concurrency"`
	IdleConns     int     `json:"idle_conns"`
}

// peerInfo says what a peer was, or why it was skipped.
type peerInfo struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
	// Setup says how the peer was configured.
	Setup   string `json:"setup,omitempty"`
	Skipped string `json:"skipped,omitempty"`
}

// modeResult is every figure of one mode (pinned or unpinned).
type modeResult struct {
	Mode string `json:"mode"`
	// Setup says where this program (clients and backends) ran.
	Setup string `json:"setup"`
	// Peers says how each peer ran in this mode (workers, CPUs seen in
	// /proc), or why it was skipped.
	Peers []peerInfo `json:"peers"`
	// Handshakes has one cell per concurrency and peer.
	Handshakes []handshakeCell `json:"handshakes"`
	// Download (TLS records from the backend) and Raw (plain bytes to the
	// sink) have one cell per stream count and peer.
	Download []throughputCell `json:"tls_download"`
	Raw      []throughputCell `json:"raw_copy"`
	// Idle has one cell per proxy.
	Idle []idleCell `json:"idle,omitempty"`
}

// handshakeSample is one run of a handshake cell.
type handshakeSample struct {
	Run         int     `json:"run"`
	Conns       int64   `json:"conns"`
	Errors      int64   `json:"errors"`
	FirstError  string  `json:"first_error,omitempty"`
	Seconds     float64 `json:"seconds"`
	ConnsPerSec float64 `json:"conns_per_sec"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	// ProxyCPUSeconds is the proxy's utime+stime over the run; absent for
	// direct.
	ProxyCPUSeconds *float64 `json:"proxy_cpu_seconds,omitempty"`
}

// handshakeCell is one (peer, concurrency) cell: full TLS handshakes.
type handshakeCell struct {
	Peer        string            `json:"peer"`
	Concurrency int               `json:"concurrency"`
	Runs        []handshakeSample `json:"runs"`

	ConnsPerSec *stat `json:"conns_per_sec,omitempty"`
	P50Ms       *stat `json:"p50_ms,omitempty"`
	P99Ms       *stat `json:"p99_ms,omitempty"`
	// CoresUsed is the proxy's CPU seconds over wall seconds.
	CoresUsed *stat `json:"proxy_cores_used,omitempty"`
	// CPUMsPer1000 is the proxy's CPU in ms per 1,000 connections.
	CPUMsPer1000  *stat `json:"proxy_cpu_ms_per_1000_conns,omitempty"`
	ConnsVsDirect *stat `json:"conns_vs_direct,omitempty"`

	Errors     int64  `json:"errors"`
	FirstError string `json:"first_error,omitempty"`
}

// throughputSample is one run of a throughput cell.
type throughputSample struct {
	Run        int     `json:"run"`
	Bytes      int64   `json:"bytes"`
	Errors     int64   `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	Seconds    float64 `json:"seconds"`
	MBPerSec   float64 `json:"mb_per_sec"`
	// BackendBytes is what the TLS backend says it sent during a download
	// sample; a mismatch with Bytes is an error of the sample.
	BackendBytes *int64 `json:"backend_bytes,omitempty"`
}

// throughputCell is one (peer, streams) cell of TLS download or raw copy.
type throughputCell struct {
	Peer    string             `json:"peer"`
	Streams int                `json:"streams"`
	Runs    []throughputSample `json:"runs"`

	MBPerSec *stat `json:"mb_per_sec,omitempty"`
	VsDirect *stat `json:"vs_direct,omitempty"`

	Bytes      int64  `json:"bytes"`
	Errors     int64  `json:"errors"`
	FirstError string `json:"first_error,omitempty"`
}

// idleSample is one fill of idle connections through a freshly started
// proxy: its growth per connection.
type idleSample struct {
	Run        int    `json:"run"`
	Requested  int    `json:"requested"`
	Opened     int    `json:"opened"`
	Errors     int64  `json:"errors"`
	FirstError string `json:"first_error,omitempty"`
	// Before is the proxy settled before the fill, At2s two seconds after
	// the last connection opened, After settled with the connections held.
	Before procSample `json:"before"`
	At2s   procSample `json:"at_2s"`
	After  procSample `json:"after"`
	// PeakRSSKiB is the highest RSS seen from the fill's start to At2s.
	PeakRSSKiB uint64 `json:"peak_rss_kib"`

	RSS2sKiBPerConn   float64 `json:"rss_2s_kib_per_conn"`
	PeakRSSKiBPerConn float64 `json:"peak_rss_kib_per_conn"`
	PssKiBPerConn     float64 `json:"pss_settled_kib_per_conn"`
	RSSKiBPerConn     float64 `json:"rss_settled_kib_per_conn"`
	FDsPerConn        float64 `json:"fds_per_conn"`

	// Refill is the proxy 2 s after a second fill, made once the first
	// fill's connections were all closed; RefillPeakRSSKiB the highest RSS
	// during it. Its per-connection figures are over Before as well.
	Refill                  procSample `json:"refill_at_2s"`
	RefillOpened            int        `json:"refill_opened"`
	RefillPeakRSSKiB        uint64     `json:"refill_peak_rss_kib"`
	RefillRSS2sKiBPerConn   float64    `json:"refill_rss_2s_kib_per_conn"`
	RefillPeakRSSKiBPerConn float64    `json:"refill_peak_rss_kib_per_conn"`
}

// idleCell is one proxy's idle-connection figures over the runs.
type idleCell struct {
	Peer string       `json:"peer"`
	Runs []idleSample `json:"runs"`

	RSS2s   *stat `json:"rss_2s_kib_per_conn,omitempty"`
	PeakRSS *stat `json:"peak_rss_kib_per_conn,omitempty"`
	Pss     *stat `json:"pss_settled_kib_per_conn,omitempty"`
	RSS     *stat `json:"rss_settled_kib_per_conn,omitempty"`
	FDs     *stat `json:"fds_per_conn,omitempty"`
	// Refill and RefillPeak are RSS 2 s after, and the peak during, the
	// second fill.
	Refill     *stat `json:"refill_rss_2s_kib_per_conn,omitempty"`
	RefillPeak *stat `json:"refill_peak_rss_kib_per_conn,omitempty"`

	// Opened is the fewest connections a run held; Requested what each run
	// asked.
	Opened     int    `json:"opened"`
	Requested  int    `json:"requested"`
	Errors     int64  `json:"errors"`
	FirstError string `json:"first_error,omitempty"`
}

// goal is one target for meshgate and whether this run met it.
type goal struct {
	Name string `json:"name"`
	// Measured states the figures compared.
	Measured string `json:"measured"`
	// Met is absent when the run lacks a figure the goal needs.
	Met *bool `json:"met,omitempty"`
}

// finish computes the summaries of every cell of m from its runs, and the
// ratios to direct, run by run.
func (m *modeResult) finish() {
	byRun := func(n int, f func(i int) (run int, v float64, ok bool)) map[int]float64 {
		out := make(map[int]float64)
		for i := range n {
			if run, v, ok := f(i); ok {
				out[run] = v
			}
		}
		return out
	}
	values := func(m map[int]float64) []float64 {
		var v []float64
		for _, x := range m {
			v = append(v, x)
		}
		return v
	}
	hsRate := func(c *handshakeCell) map[int]float64 {
		return byRun(len(c.Runs), func(i int) (int, float64, bool) {
			r := c.Runs[i]
			return r.Run, r.ConnsPerSec, r.Conns > 0
		})
	}
	for i := range m.Handshakes {
		c := &m.Handshakes[i]
		c.Errors, c.FirstError = 0, ""
		var p50, p99, cores, per []float64
		for _, r := range c.Runs {
			c.Errors += r.Errors
			if c.FirstError == "" {
				c.FirstError = r.FirstError
			}
			if r.Conns == 0 {
				continue
			}
			p50, p99 = append(p50, r.P50Ms), append(p99, r.P99Ms)
			if r.ProxyCPUSeconds != nil && r.Seconds > 0 {
				cores = append(cores, *r.ProxyCPUSeconds/r.Seconds)
				per = append(per, *r.ProxyCPUSeconds*1e6/float64(r.Conns))
			}
		}
		c.ConnsPerSec = summarize(values(hsRate(c)))
		c.P50Ms, c.P99Ms, c.CoresUsed, c.CPUMsPer1000 = summarize(p50), summarize(p99), summarize(cores), summarize(per)
		c.ConnsVsDirect = nil
		if c.Peer == peerDirect {
			continue
		}
		for j := range m.Handshakes {
			if d := &m.Handshakes[j]; d.Peer == peerDirect && d.Concurrency == c.Concurrency {
				c.ConnsVsDirect = summarize(pairedRatios(hsRate(c), hsRate(d)))
			}
		}
	}
	for _, cells := range [][]throughputCell{m.Download, m.Raw} {
		rate := func(c *throughputCell) map[int]float64 {
			return byRun(len(c.Runs), func(i int) (int, float64, bool) {
				r := c.Runs[i]
				return r.Run, r.MBPerSec, r.Bytes > 0 && r.Errors == 0
			})
		}
		for i := range cells {
			c := &cells[i]
			c.Bytes, c.Errors, c.FirstError = 0, 0, ""
			for _, r := range c.Runs {
				c.Bytes += r.Bytes
				c.Errors += r.Errors
				if c.FirstError == "" {
					c.FirstError = r.FirstError
				}
			}
			c.MBPerSec, c.VsDirect = summarize(values(rate(c))), nil
			if c.Peer == peerDirect {
				continue
			}
			for j := range cells {
				if d := &cells[j]; d.Peer == peerDirect && d.Streams == c.Streams {
					c.VsDirect = summarize(pairedRatios(rate(c), rate(d)))
				}
			}
		}
	}
	for i := range m.Idle {
		c := &m.Idle[i]
		c.Errors, c.FirstError, c.Opened, c.Requested = 0, "", 0, 0
		var rss2, peak, pss, rss, fds, refill, refillPeak []float64
		for k, r := range c.Runs {
			c.Errors += r.Errors
			if c.FirstError == "" {
				c.FirstError = r.FirstError
			}
			if k == 0 || r.Opened < c.Opened {
				c.Opened = r.Opened
			}
			c.Requested = max(c.Requested, r.Requested)
			if r.Opened == 0 || r.After.PIDs == 0 {
				continue
			}
			rss2, peak = append(rss2, r.RSS2sKiBPerConn), append(peak, r.PeakRSSKiBPerConn)
			pss, rss, fds = append(pss, r.PssKiBPerConn), append(rss, r.RSSKiBPerConn), append(fds, r.FDsPerConn)
			if r.RefillOpened > 0 {
				refill, refillPeak = append(refill, r.RefillRSS2sKiBPerConn), append(refillPeak, r.RefillPeakRSSKiBPerConn)
			}
		}
		c.RSS2s, c.PeakRSS, c.Pss, c.RSS, c.FDs = summarize(rss2), summarize(peak), summarize(pss), summarize(rss), summarize(fds)
		c.Refill, c.RefillPeak = summarize(refill), summarize(refillPeak)
	}
}

// mode returns the named mode's results, or nil.
func (r *results) mode(name string) *modeResult {
	for i := range r.Modes {
		if r.Modes[i].Mode == name {
			return &r.Modes[i]
		}
	}
	return nil
}

// hsCell returns the (peer, concurrency) handshake cell of m, or nil.
func (m *modeResult) hsCell(peer string, conc int) *handshakeCell {
	for i := range m.Handshakes {
		if c := &m.Handshakes[i]; c.Peer == peer && c.Concurrency == conc {
			return c
		}
	}
	return nil
}

// tpCell returns the (peer, streams) cell of cells, or nil.
func tpCell(cells []throughputCell, peer string, streams int) *throughputCell {
	for i := range cells {
		if c := &cells[i]; c.Peer == peer && c.Streams == streams {
			return c
		}
	}
	return nil
}

// idleOf returns peer's idle cell of m, or nil.
func (m *modeResult) idleOf(peer string) *idleCell {
	for i := range m.Idle {
		if c := &m.Idle[i]; c.Peer == peer {
			return c
		}
	}
	return nil
}

// lowestConc and mostStreams pick the cells the summary shows: the lowest
// concurrency and the most streams measured.
func (m *modeResult) lowestConc() int {
	c := 0
	for i, h := range m.Handshakes {
		if i == 0 || h.Concurrency < c {
			c = h.Concurrency
		}
	}
	return c
}

func mostStreams(cells []throughputCell) int {
	s := 0
	for _, c := range cells {
		s = max(s, c.Streams)
	}
	return s
}

// fillGoals checks meshgate's medians against the goals of issue 13, in the
// pinned mode unless the goal says otherwise: proxy cores at the detail
// concurrency <= 0.25; conn/s at the lowest concurrency >= 0.85x direct
// (unpinned: >= 0.80x); TLS download >= 0.95x direct and raw copy >= 0.85x
// direct at the most streams; idle RSS 2 s after the fill and settled Pss
// <= 2.5 KiB per connection.
func fillGoals(r *results) {
	r.Goals = nil
	measured := false
	for _, p := range r.Peers {
		measured = measured || (p.Name == peerMeshgate && p.Skipped == "")
	}
	if !measured {
		return
	}
	add := func(name string, s *stat, format string, atMost bool, bound float64) {
		g := goal{Name: name, Measured: "no figure"}
		if s != nil {
			g.Measured = s.format(format)
			ok := s.Median >= bound
			if atMost {
				ok = s.Median <= bound
			}
			g.Met = &ok
		}
		r.Goals = append(r.Goals, g)
	}
	pinned, unpinned := r.mode(modePinned), r.mode(modeUnpinned)
	d := r.Settings.DetailAt
	if pinned != nil {
		var cores *stat
		if c := pinned.hsCell(peerMeshgate, d); c != nil {
			cores = c.CoresUsed
		}
		add(fmt.Sprintf("pinned: proxy cores at c=%d handshakes <= 0.25", d), cores, "%.2f", true, 0.25)
		low := pinned.lowestConc()
		var c1 *stat
		if c := pinned.hsCell(peerMeshgate, low); c != nil {
			c1 = c.ConnsVsDirect
		}
		add(fmt.Sprintf("pinned: conn/s c=%d >= 0.85x direct", low), c1, "%.2fx", false, 0.85)
	}
	if unpinned != nil {
		low := unpinned.lowestConc()
		var c1 *stat
		if c := unpinned.hsCell(peerMeshgate, low); c != nil {
			c1 = c.ConnsVsDirect
		}
		add(fmt.Sprintf("unpinned: conn/s c=%d >= 0.80x direct", low), c1, "%.2fx", false, 0.80)
	}
	if pinned != nil {
		s := mostStreams(pinned.Download)
		var v *stat
		if c := tpCell(pinned.Download, peerMeshgate, s); c != nil {
			v = c.VsDirect
		}
		add(fmt.Sprintf("pinned: TLS download %d streams >= 0.95x direct", s), v, "%.2fx", false, 0.95)
		s, v = mostStreams(pinned.Raw), nil
		if c := tpCell(pinned.Raw, peerMeshgate, s); c != nil {
			v = c.VsDirect
		}
		add(fmt.Sprintf("pinned: raw copy %d streams >= 0.85x direct", s), v, "%.2fx", false, 0.85)
		var rss2, peak, pss, refill *stat
		if c := pinned.idleOf(peerMeshgate); c != nil {
			rss2, peak, pss, refill = c.RSS2s, c.PeakRSS, c.Pss, c.Refill
		}
		add("pinned: idle RSS KiB/conn 2 s after the fill <= 2.5", rss2, "%.2f", true, 2.5)
		add("pinned: idle peak RSS KiB/conn during the fill <= 2.5", peak, "%.2f", true, 2.5)
		add("pinned: idle Pss KiB/conn settled <= 2.5", pss, "%.2f", true, 2.5)
		add("pinned: idle RSS KiB/conn 2 s after the refill <= 2.5", refill, "%.2f", true, 2.5)
	}
}

// writeReport prints the summary table of each mode, the detail tables and
// the goals.
func writeReport(w io.Writer, r *results) error {
	var b strings.Builder
	fmt.Fprintf(&b, "proxybench %s: %d cores, %s, %s, open-file limit %d\n",
		r.Started.UTC().Format(time.RFC3339), r.Host.Cores, r.Host.Kernel, r.Host.GoVersion, r.Host.NoFile)
	fmt.Fprintf(&b, "load average at start %s, at end %s\n", r.Host.LoadStart, r.Host.LoadEnd)
	fmt.Fprintf(&b, "%d interleaved runs (each run restarts the proxies and visits every peer in a rotating order), samples of %gs; figures are median [min..max] over the runs, ratios to direct taken run by run\n",
		r.Settings.Runs, r.Settings.SampleSeconds)
	for _, p := range r.Peers {
		switch {
		case p.Skipped != "":
			lines := strings.Split(strings.TrimSpace(p.Skipped), "\n")
			fmt.Fprintf(&b, "  %-9s SKIPPED: %s\n", p.Name, lines[0])
			for _, l := range lines[1:min(len(lines), 8)] {
				fmt.Fprintf(&b, "            %s\n", strings.TrimSpace(l))
			}
		case p.Version != "":
			fmt.Fprintf(&b, "  %-9s %s\n", p.Name, p.Version)
		default:
			fmt.Fprintf(&b, "  %-9s %s\n", p.Name, p.Setup)
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	tw := func() *tabwriter.Writer { return tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight) }
	for _, m := range r.Modes {
		fmt.Fprintf(&b, "\n==== mode %s: %s\n", m.Mode, m.Setup)
		for _, p := range m.Peers {
			if p.Skipped != "" {
				fmt.Fprintf(&b, "  %-9s SKIPPED: %s\n", p.Name, firstLine([]byte(p.Skipped)))
			} else {
				fmt.Fprintf(&b, "  %-9s %s\n", p.Name, p.Setup)
			}
		}
		var names []string
		for _, p := range m.Peers {
			if p.Skipped == "" {
				names = append(names, p.Name)
			}
		}
		low, d := m.lowestConc(), r.Settings.DetailAt
		ds, rs := mostStreams(m.Download), mostStreams(m.Raw)
		fmt.Fprintf(&b, "\nsummary (%s)\n", m.Mode)
		t := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintf(t, "figure\t%s\n", strings.Join(names, "\t"))
		row := func(label string, f func(peer string) string) {
			cells := []string{label}
			for _, n := range names {
				cells = append(cells, f(n))
			}
			fmt.Fprintln(t, strings.Join(cells, "\t"))
		}
		hs := func(conc int, pick func(*handshakeCell) *stat, format string) func(string) string {
			return func(peer string) string {
				if c := m.hsCell(peer, conc); c != nil {
					return pick(c).format(format)
				}
				return "-"
			}
		}
		tp := func(cells []throughputCell, s int, pick func(*throughputCell) *stat, format string) func(string) string {
			return func(peer string) string {
				if c := tpCell(cells, peer, s); c != nil {
					return pick(c).format(format)
				}
				return "-"
			}
		}
		idle := func(pick func(*idleCell) *stat) func(string) string {
			return func(peer string) string {
				if c := m.idleOf(peer); c != nil {
					return pick(c).format("%.2f")
				}
				return "-"
			}
		}
		if slices.ContainsFunc(m.Handshakes, func(c handshakeCell) bool { return c.Concurrency == d }) {
			row(fmt.Sprintf("proxy cores used, c=%d handshakes", d), hs(d, func(c *handshakeCell) *stat { return c.CoresUsed }, "%.2f"))
			row(fmt.Sprintf("conn/s c=%d", d), hs(d, func(c *handshakeCell) *stat { return c.ConnsPerSec }, "%.0f"))
		}
		if len(m.Handshakes) > 0 {
			row(fmt.Sprintf("conn/s c=%d", low), hs(low, func(c *handshakeCell) *stat { return c.ConnsPerSec }, "%.0f"))
			row(fmt.Sprintf("conn/s c=%d vs direct", low), hs(low, func(c *handshakeCell) *stat { return c.ConnsVsDirect }, "%.2fx"))
		}
		if len(m.Download) > 0 {
			row(fmt.Sprintf("TLS download %d streams MB/s", ds), tp(m.Download, ds, func(c *throughputCell) *stat { return c.MBPerSec }, "%.0f"))
			row(fmt.Sprintf("TLS download %d streams vs direct", ds), tp(m.Download, ds, func(c *throughputCell) *stat { return c.VsDirect }, "%.2fx"))
		}
		if len(m.Raw) > 0 {
			row(fmt.Sprintf("raw copy %d streams MB/s", rs), tp(m.Raw, rs, func(c *throughputCell) *stat { return c.MBPerSec }, "%.0f"))
			row(fmt.Sprintf("raw copy %d streams vs direct", rs), tp(m.Raw, rs, func(c *throughputCell) *stat { return c.VsDirect }, "%.2fx"))
		}
		if len(m.Idle) > 0 {
			row(fmt.Sprintf("idle RSS KiB/conn 2 s after fill (%d held)", r.Settings.IdleConns), idle(func(c *idleCell) *stat { return c.RSS2s }))
			row("idle peak RSS KiB/conn during fill", idle(func(c *idleCell) *stat { return c.PeakRSS }))
			row("idle Pss KiB/conn settled", idle(func(c *idleCell) *stat { return c.Pss }))
			row("idle RSS KiB/conn settled", idle(func(c *idleCell) *stat { return c.RSS }))
			row("idle fds/conn", idle(func(c *idleCell) *stat { return c.FDs }))
			row("idle RSS KiB/conn 2 s after refill", idle(func(c *idleCell) *stat { return c.Refill }))
			row("idle peak RSS KiB/conn during refill", idle(func(c *idleCell) *stat { return c.RefillPeak }))
		}
		t.Flush()

		fmt.Fprintf(&b, "\nhandshakes (%s): dial, TLS handshake with SNI, 1 request/response, close\n", m.Mode)
		t = tw()
		fmt.Fprintln(t, "peer\tc\tconn/s\tvs direct\tp50 ms\tp99 ms\tproxy cores\tproxy CPU ms/1000 conns\terrors\t")
		for _, c := range m.Handshakes {
			fmt.Fprintf(t, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t\n", c.Peer, c.Concurrency, c.ConnsPerSec.format("%.0f"),
				c.ConnsVsDirect.format("%.2fx"), c.P50Ms.format("%.3f"), c.P99Ms.format("%.3f"),
				c.CoresUsed.format("%.2f"), c.CPUMsPer1000.format("%.0f"), c.Errors)
		}
		t.Flush()
		for _, part := range []struct {
			title string
			cells []throughputCell
		}{
			{"TLS download (backend writes 16 KiB TLS records after the handshake until the client's stop, then a byte count)", m.Download},
			{"raw copy (real ClientHello, then plain bytes client -> sink, half-close, byte count back)", m.Raw},
		} {
			fmt.Fprintf(&b, "\n%s (%s), MB/s = 10^6 B/s\n", part.title, m.Mode)
			t = tw()
			fmt.Fprintln(t, "peer\tstreams\tMB/s\tvs direct\tGB moved\terrors\t")
			for _, c := range part.cells {
				fmt.Fprintf(t, "%s\t%d\t%s\t%s\t%.2f\t%d\t\n", c.Peer, c.Streams, c.MBPerSec.format("%.0f"),
					c.VsDirect.format("%.2fx"), float64(c.Bytes)/1e9, c.Errors)
			}
			t.Flush()
		}
		if len(m.Idle) > 0 {
			fmt.Fprintf(&b, "\nidle proxied connections (%s; handshake + 1 request, then idle; fresh proxy each run): proxy growth per connection\n", m.Mode)
			t = tw()
			fmt.Fprintln(t, "peer\topened\tRSS KiB 2 s after\tpeak RSS KiB\tPss KiB settled\tRSS KiB settled\tfds\terrors\t")
			for _, c := range m.Idle {
				fmt.Fprintf(t, "%s\t%d/%d\t%s\t%s\t%s\t%s\t%s\t%d\t\n", c.Peer, c.Opened, c.Requested,
					c.RSS2s.format("%.2f"), c.PeakRSS.format("%.2f"), c.Pss.format("%.2f"), c.RSS.format("%.2f"), c.FDs.format("%.2f"), c.Errors)
			}
			t.Flush()
		}
	}

	if len(r.Goals) > 0 {
		fmt.Fprintf(&b, "\nmeshgate goals (issue 13; medians)\n")
		t := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		for _, g := range r.Goals {
			verdict := "n/a"
			if g.Met != nil && *g.Met {
				verdict = "met"
			} else if g.Met != nil {
				verdict = "MISSED"
			}
			fmt.Fprintf(t, "  %s\t%s\t%s\n", verdict, g.Name, g.Measured)
		}
		t.Flush()
	}

	var errs []string
	for _, m := range r.Modes {
		for _, c := range m.Handshakes {
			if c.FirstError != "" {
				errs = append(errs, fmt.Sprintf("%s handshakes %s c=%d: %s", m.Mode, c.Peer, c.Concurrency, c.FirstError))
			}
		}
		for _, c := range m.Download {
			if c.FirstError != "" {
				errs = append(errs, fmt.Sprintf("%s TLS download %s streams=%d: %s", m.Mode, c.Peer, c.Streams, c.FirstError))
			}
		}
		for _, c := range m.Raw {
			if c.FirstError != "" {
				errs = append(errs, fmt.Sprintf("%s raw copy %s streams=%d: %s", m.Mode, c.Peer, c.Streams, c.FirstError))
			}
		}
		for _, c := range m.Idle {
			if c.FirstError != "" {
				errs = append(errs, fmt.Sprintf("%s idle %s: %s", m.Mode, c.Peer, c.FirstError))
			}
		}
	}
	if len(errs) > 0 {
		fmt.Fprintf(&b, "\nfirst error of each failing cell:\n")
		for _, e := range errs {
			fmt.Fprintf(&b, "  %s\n", firstLine([]byte(e)))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeJSON writes r to path.
func writeJSON(path string, r *results) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("proxybench: encode results: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("proxybench: write %s: %w", path, err)
	}
	return nil
}
