package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
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
	// Handshakes has one cell per concurrency and peer.
	Handshakes []handshakeCell `json:"handshakes"`
	// Throughput has one cell per stream count and peer.
	Throughput []throughputCell `json:"throughput"`
	// Idle has one cell per proxy.
	Idle []idleCell `json:"idle,omitempty"`
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
	CellSeconds float64 `json:"cell_seconds"`
	Rounds      int     `json:"rounds"`
	Workers     int     `json:"workers"`
	DetailAt    int     `json:"detail_concurrency"`
	IdleConns   int     `json:"idle_conns"`
}

// peerInfo says what a peer was, or why it was skipped.
type peerInfo struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
	// Setup says how the peer was configured.
	Setup   string `json:"setup,omitempty"`
	Skipped string `json:"skipped,omitempty"`
}

// handshakeCell is one (peer, concurrency) cell of figures 1 and 2.
type handshakeCell struct {
	Peer        string  `json:"peer"`
	Concurrency int     `json:"concurrency"`
	Conns       int64   `json:"conns"`
	Errors      int64   `json:"errors"`
	FirstError  string  `json:"first_error,omitempty"`
	Seconds     float64 `json:"seconds"`
	ConnsPerSec float64 `json:"conns_per_sec"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	// ProxyCPUSeconds is the proxy's utime+stime over the cell; absent for
	// direct.
	ProxyCPUSeconds *float64 `json:"proxy_cpu_seconds,omitempty"`
	// CPUMsPer1000 is ProxyCPUSeconds in ms per 1,000 connections.
	CPUMsPer1000 *float64 `json:"proxy_cpu_ms_per_1000_conns,omitempty"`

	ConnsVsDirect  *float64 `json:"conns_vs_direct,omitempty"`
	ConnsVsHAProxy *float64 `json:"conns_vs_haproxy,omitempty"`
	P99VsDirect    *float64 `json:"p99_vs_direct,omitempty"`
	P99VsHAProxy   *float64 `json:"p99_vs_haproxy,omitempty"`
	CPUVsHAProxy   *float64 `json:"cpu_vs_haproxy,omitempty"`
}

// throughputCell is one (peer, streams) cell of figure 3.
type throughputCell struct {
	Peer       string  `json:"peer"`
	Streams    int     `json:"streams"`
	Bytes      int64   `json:"bytes"`
	Errors     int64   `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	Seconds    float64 `json:"seconds"`
	MBPerSec   float64 `json:"mb_per_sec"`

	VsDirect  *float64 `json:"vs_direct,omitempty"`
	VsHAProxy *float64 `json:"vs_haproxy,omitempty"`
}

// idleCell is one proxy's figure 4.
type idleCell struct {
	Peer       string `json:"peer"`
	Requested  int    `json:"requested"`
	Opened     int    `json:"opened"`
	Errors     int64  `json:"errors"`
	FirstError string `json:"first_error,omitempty"`
	// Before and After are the proxy's totals without and with the idle
	// connections.
	Before procSample `json:"before"`
	After  procSample `json:"after"`

	PssKiBPerConn float64 `json:"pss_kib_per_conn"`
	RSSKiBPerConn float64 `json:"rss_kib_per_conn"`
	FDsPerConn    float64 `json:"fds_per_conn"`

	PssVsHAProxy *float64 `json:"pss_vs_haproxy,omitempty"`
	FDsVsHAProxy *float64 `json:"fds_vs_haproxy,omitempty"`
}

// goal is one target for meshgate and whether this run met it.
type goal struct {
	Name string `json:"name"`
	// Measured states the figures compared.
	Measured string `json:"measured"`
	// Met is absent when the run lacks a figure the goal needs.
	Met *bool `json:"met,omitempty"`
}

// fillGoals checks meshgate's cells against the targets of the benchmark:
// handshakes at c=1 within 5% of direct; p99 at the detail concurrency no
// worse than the best other proxy; CPU per connection no more than
// HAProxy's; throughput at least 0.85x direct and ahead of HAProxy and nginx;
// idle connections at most 3 KiB and 2 fds each.
func fillGoals(r *results) {
	r.Goals = nil
	measured := false
	for _, p := range r.Peers {
		measured = measured || (p.Name == peerMeshgate && p.Skipped == "")
	}
	if !measured {
		return
	}
	add := func(name, m string, ok *bool) { r.Goals = append(r.Goals, goal{Name: name, Measured: m, Met: ok}) }
	yes := func(b bool) *bool { return &b }
	hs := func(peer string, c int) *handshakeCell {
		for i := range r.Handshakes {
			if h := &r.Handshakes[i]; h.Peer == peer && h.Concurrency == c && h.Conns > 0 {
				return h
			}
		}
		return nil
	}
	first := 0
	if len(r.Handshakes) > 0 {
		first = r.Handshakes[0].Concurrency
		for _, h := range r.Handshakes {
			first = min(first, h.Concurrency)
		}
	}
	if m := hs(peerMeshgate, first); m != nil && m.ConnsVsDirect != nil {
		add(fmt.Sprintf("conn/s at c=%d >= 0.95x direct", first), fmtRatio(m.ConnsVsDirect), yes(*m.ConnsVsDirect >= 0.95))
	} else {
		add(fmt.Sprintf("conn/s at c=%d >= 0.95x direct", first), "no figure", nil)
	}
	d := r.Settings.DetailAt
	name := fmt.Sprintf("p99 at c=%d <= best other proxy", d)
	if m := hs(peerMeshgate, d); m != nil {
		best, bestPeer := 0.0, ""
		for _, p := range []string{peerHAProxy, peerNginx} {
			if o := hs(p, d); o != nil && (bestPeer == "" || o.P99Ms < best) {
				best, bestPeer = o.P99Ms, p
			}
		}
		if bestPeer != "" {
			add(name, fmt.Sprintf("%.3f ms vs %s %.3f ms", m.P99Ms, bestPeer, best), yes(m.P99Ms <= best))
		} else {
			add(name, "no other proxy measured", nil)
		}
		if m.CPUMsPer1000 != nil && m.CPUVsHAProxy != nil {
			add("CPU per 1,000 conns <= HAProxy", fmt.Sprintf("%.1f ms, %s HAProxy", *m.CPUMsPer1000, fmtRatio(m.CPUVsHAProxy)), yes(*m.CPUVsHAProxy <= 1))
		} else {
			add("CPU per 1,000 conns <= HAProxy", "no figure", nil)
		}
	}
	for _, c := range r.Throughput {
		if c.Peer != peerMeshgate {
			continue
		}
		name := fmt.Sprintf("throughput %d streams >= 0.85x direct, ahead of HAProxy and nginx", c.Streams)
		if c.VsDirect == nil {
			add(name, "no figure", nil)
			continue
		}
		ok := *c.VsDirect >= 0.85
		m := fmt.Sprintf("%s direct", fmtRatio(c.VsDirect))
		for _, o := range r.Throughput {
			if (o.Peer == peerHAProxy || o.Peer == peerNginx) && o.Streams == c.Streams && o.MBPerSec > 0 {
				ok = ok && c.MBPerSec > o.MBPerSec
				m += fmt.Sprintf(", %.2fx %s", c.MBPerSec/o.MBPerSec, o.Peer)
			}
		}
		add(name, m, yes(ok))
	}
	for _, c := range r.Idle {
		if c.Peer == peerMeshgate && c.Opened > 0 {
			add("idle conn <= 3 KiB and 2 fds", fmt.Sprintf("%.2f KiB Pss, %.2f fds at %d conns", c.PssKiBPerConn, c.FDsPerConn, c.Opened),
				yes(c.PssKiBPerConn <= 3 && c.FDsPerConn <= 2))
		}
	}
}

// ratio returns a/b, or nil when either is not positive.
func ratio(a, b float64) *float64 {
	if a <= 0 || b <= 0 {
		return nil
	}
	r := a / b
	return &r
}

// fillRatios sets the ratio fields against direct and HAProxy cells of the
// same shape, clearing any set before.
func fillRatios(r *results) {
	hs := func(peer string, c int) *handshakeCell {
		for i := range r.Handshakes {
			if r.Handshakes[i].Peer == peer && r.Handshakes[i].Concurrency == c {
				return &r.Handshakes[i]
			}
		}
		return nil
	}
	for i := range r.Handshakes {
		c := &r.Handshakes[i]
		c.ConnsVsDirect, c.ConnsVsHAProxy, c.P99VsDirect, c.P99VsHAProxy, c.CPUVsHAProxy = nil, nil, nil, nil, nil
		if d := hs(peerDirect, c.Concurrency); d != nil && c.Peer != peerDirect {
			c.ConnsVsDirect = ratio(c.ConnsPerSec, d.ConnsPerSec)
			c.P99VsDirect = ratio(c.P99Ms, d.P99Ms)
		}
		if h := hs(peerHAProxy, c.Concurrency); h != nil && c.Peer != peerHAProxy {
			c.ConnsVsHAProxy = ratio(c.ConnsPerSec, h.ConnsPerSec)
			c.P99VsHAProxy = ratio(c.P99Ms, h.P99Ms)
			if c.CPUMsPer1000 != nil && h.CPUMsPer1000 != nil {
				c.CPUVsHAProxy = ratio(*c.CPUMsPer1000, *h.CPUMsPer1000)
			}
		}
	}
	tp := func(peer string, s int) *throughputCell {
		for i := range r.Throughput {
			if r.Throughput[i].Peer == peer && r.Throughput[i].Streams == s {
				return &r.Throughput[i]
			}
		}
		return nil
	}
	for i := range r.Throughput {
		c := &r.Throughput[i]
		c.VsDirect, c.VsHAProxy = nil, nil
		if d := tp(peerDirect, c.Streams); d != nil && c.Peer != peerDirect {
			c.VsDirect = ratio(c.MBPerSec, d.MBPerSec)
		}
		if h := tp(peerHAProxy, c.Streams); h != nil && c.Peer != peerHAProxy {
			c.VsHAProxy = ratio(c.MBPerSec, h.MBPerSec)
		}
	}
	var h *idleCell
	for i := range r.Idle {
		if r.Idle[i].Peer == peerHAProxy {
			h = &r.Idle[i]
		}
	}
	for i := range r.Idle {
		c := &r.Idle[i]
		c.PssVsHAProxy, c.FDsVsHAProxy = nil, nil
		if h != nil && c.Peer != peerHAProxy {
			c.PssVsHAProxy = ratio(c.PssKiBPerConn, h.PssKiBPerConn)
			c.FDsVsHAProxy = ratio(c.FDsPerConn, h.FDsPerConn)
		}
	}
}

// fmtRatio renders a ratio as "0.97x", or "-" when absent.
func fmtRatio(r *float64) string {
	if r == nil {
		return "-"
	}
	return fmt.Sprintf("%.2fx", *r)
}

// fmtOpt renders an optional figure with format, or "n/a".
func fmtOpt(format string, v *float64) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf(format, *v)
}

// writeReport prints the four tables.
func writeReport(w io.Writer, r *results) error {
	var b strings.Builder
	fmt.Fprintf(&b, "proxybench %s: %d cores, %s, %s, open-file limit %d\n",
		r.Started.UTC().Format(time.RFC3339), r.Host.Cores, r.Host.Kernel, r.Host.GoVersion, r.Host.NoFile)
	fmt.Fprintf(&b, "load average at start %s, at end %s\n", r.Host.LoadStart, r.Host.LoadEnd)
	fmt.Fprintf(&b, "cells of %gs in %d rounds that rotate over the peers; proxies get %d workers (meshgate GOMAXPROCS, HAProxy nbthread, nginx worker_processes)\n",
		r.Settings.CellSeconds, r.Settings.Rounds, r.Settings.Workers)
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
			if p.Setup != "" {
				fmt.Fprintf(&b, "            %s\n", p.Setup)
			}
		default:
			fmt.Fprintf(&b, "  %-9s %s\n", p.Name, p.Setup)
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}

	tw := func() *tabwriter.Writer { return tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight) }

	fmt.Fprintf(&b, "\n1. Full TLS handshakes (dial, handshake with SNI, 1 request/response, close): conn/s and latency\n")
	t := tw()
	fmt.Fprintln(t, "peer\tc\tconn/s\tvs direct\tvs haproxy\tp50 ms\tp99 ms\tp99 vs direct\tp99 vs haproxy\terrors\t")
	for _, c := range r.Handshakes {
		fmt.Fprintf(t, "%s\t%d\t%.0f\t%s\t%s\t%.3f\t%.3f\t%s\t%s\t%d\t\n", c.Peer, c.Concurrency, c.ConnsPerSec,
			fmtRatio(c.ConnsVsDirect), fmtRatio(c.ConnsVsHAProxy), c.P50Ms, c.P99Ms,
			fmtRatio(c.P99VsDirect), fmtRatio(c.P99VsHAProxy), c.Errors)
	}
	t.Flush()

	fmt.Fprintf(&b, "\n2. Proxy CPU per 1,000 connections (c=%d cells; utime+stime of the proxy and its workers)\n", r.Settings.DetailAt)
	t = tw()
	fmt.Fprintln(t, "peer\tconns\tCPU s\tms/1000 conns\tvs haproxy\t")
	for _, c := range r.Handshakes {
		if c.Concurrency != r.Settings.DetailAt {
			continue
		}
		fmt.Fprintf(t, "%s\t%d\t%s\t%s\t%s\t\n", c.Peer, c.Conns, fmtOpt("%.2f", c.ProxyCPUSeconds),
			fmtOpt("%.1f", c.CPUMsPer1000), fmtRatio(c.CPUVsHAProxy))
	}
	t.Flush()

	fmt.Fprintf(&b, "\n3. Copy throughput (real ClientHello, then plain bytes client -> sink, half-close, byte count back), MB/s = 10^6 B/s\n")
	t = tw()
	fmt.Fprintln(t, "peer\tstreams\tMB/s\tvs direct\tvs haproxy\tGB moved\terrors\t")
	for _, c := range r.Throughput {
		fmt.Fprintf(t, "%s\t%d\t%.0f\t%s\t%s\t%.2f\t%d\t\n", c.Peer, c.Streams, c.MBPerSec,
			fmtRatio(c.VsDirect), fmtRatio(c.VsHAProxy), float64(c.Bytes)/1e9, c.Errors)
	}
	t.Flush()

	if len(r.Idle) > 0 {
		fmt.Fprintf(&b, "\n4. Idle proxied connections (handshake + 1 request done, then idle): proxy growth per connection\n")
		t = tw()
		fmt.Fprintln(t, "peer\topened\tPss KiB/conn\tRSS KiB/conn\tfds/conn\tPss vs haproxy\tfds vs haproxy\terrors\t")
		for _, c := range r.Idle {
			fmt.Fprintf(t, "%s\t%d/%d\t%.2f\t%.2f\t%.2f\t%s\t%s\t%d\t\n", c.Peer, c.Opened, c.Requested,
				c.PssKiBPerConn, c.RSSKiBPerConn, c.FDsPerConn, fmtRatio(c.PssVsHAProxy), fmtRatio(c.FDsVsHAProxy), c.Errors)
		}
		t.Flush()
	}

	if len(r.Goals) > 0 {
		fmt.Fprintf(&b, "\nmeshgate goals\n")
		t = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
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
	for _, c := range r.Handshakes {
		if c.FirstError != "" {
			errs = append(errs, fmt.Sprintf("handshakes %s c=%d: %s", c.Peer, c.Concurrency, c.FirstError))
		}
	}
	for _, c := range r.Throughput {
		if c.FirstError != "" {
			errs = append(errs, fmt.Sprintf("throughput %s streams=%d: %s", c.Peer, c.Streams, c.FirstError))
		}
	}
	for _, c := range r.Idle {
		if c.FirstError != "" {
			errs = append(errs, fmt.Sprintf("idle %s: %s", c.Peer, c.FirstError))
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
