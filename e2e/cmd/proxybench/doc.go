// Command proxybench compares SNI passthrough proxies on loopback: the client
// dialling the backend directly, meshgate (a Gateway server in PASSTHROUGH
// mode), HAProxy (mode tcp, req_ssl_sni) and nginx (stream, ssl_preread).
// All of them front the same in-process backends, and every figure is taken
// in the same run, so ratios between peers are meaningful.
//
// Usage, from the repository root (make bench does this):
//
//	MESHGATE_BIN=bin/meshgate go run ./e2e/cmd/proxybench [-duration 2s] [-runs 3]
//	    [-modes pinned,unpinned] [-proxy-cpu -1] [-conns 9500]
//	    [-only direct,meshgate,haproxy,nginx] [-skip-idle] [-short]
//	    [-json FILE] [-workers 2] [-install=true] [-keep] [-timeout 30m]
//
// Modes (-modes, default both):
//
//   - pinned: each proxy runs under taskset -c on one CPU of its own (the
//     highest allowed one, or -proxy-cpu) with one worker (GOMAXPROCS=1,
//     nbthread 1, worker_processes 1); this program, which holds the load
//     generator and the backends, moves itself onto the other CPUs for the
//     duration (taskset -a -p) and moves back afterwards. Needs taskset
//     (util-linux) and 2 CPUs, otherwise the mode is skipped with a note.
//   - unpinned: no affinity; proxies get -workers workers.
//
// Each of -runs runs (default 3) starts the proxies afresh in each mode
// (modes alternate from run to run), measures idle connections first, then
// every cell for every peer in a rotating order, so that load from elsewhere
// on the machine weighs on all peers alike. Every figure is reported as
// median [min..max] over the runs; ratios to direct are taken run by run.
// The report prints the load average and warns when it exceeded the core
// count.
//
// Figures, per mode and peer:
//
//  1. Full TLS handshakes at concurrency 1, 16 and 64: each connection
//     dials, completes a TLS handshake with SNI (Go's default post-quantum
//     ClientHello, ECDSA P-256 server certificate, no session resumption),
//     sends one byte, reads one byte and closes. conn/s and its ratio to
//     direct, p50/p99 of the whole exchange, and the proxy's CPU
//     (utime+stime of it and its workers from /proc): cores used (CPU
//     seconds over wall seconds) and ms per 1,000 connections.
//  2. TLS download with 1 and 8 streams: after the handshake the backend
//     writes 16 KiB TLS records until the client's stop, then an 8-byte
//     count; the client checks the count, and each sample checks the sum
//     against what the backend says it sent.
//  3. Raw copy with 1 and 8 streams: a real ClientHello record, then plain
//     bytes to a sink that counts them after the client half-closes.
//  4. Memory and fds per idle proxied connection: -conns connections
//     (default 9,500) complete a handshake and one exchange through a
//     freshly started proxy, then stay idle. The proxy's growth per
//     connection in RSS 2 s after the last one opened, the peak RSS until
//     then, and Pss (smaps_rollup), RSS and open fds once settled.
//
// The summary of each mode gives the rows of issue 13's table; the goals
// section checks meshgate's medians against that goals.
//
// Proxy configs are written to a temporary folder; every process is stopped
// at the end, on failure and on Ctrl-C. The open-file limit is raised to its
// hard limit; the idle test uses at most (limit - 768) / 2 connections, as
// this program and the proxy each hold two fds per connection. When HAProxy
// or nginx (with its stream module) is missing and the program runs as root,
// it installs them with apt-get (-install=false turns this off); otherwise
// that peer is skipped and the report says why.
//
// All traffic stays on 127.0.0.1, and every loop is bounded in time and
// count.
package main
