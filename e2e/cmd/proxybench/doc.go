// Command proxybench compares SNI passthrough proxies on loopback: the client
// dialling the backend directly, meshgate (a Gateway server in PASSTHROUGH
// mode), HAProxy (mode tcp, req_ssl_sni) and nginx (stream, ssl_preread).
// All of them front the same in-process backends, and every figure is taken
// in the same run, so ratios between peers are meaningful.
//
// Usage, from the repository root (make bench does this):
//
//	MESHGATE_BIN=bin/meshgate go run ./e2e/cmd/proxybench [-duration 5s] [-rounds 5]
//	    [-conns 9000] [-only direct,meshgate,haproxy,nginx] [-skip-idle] [-short]
//	    [-json FILE] [-workers 2] [-install=true] [-keep] [-timeout 30m]
//
// Each cell is cut into rounds that visit every peer in a rotating order, so
// that load from elsewhere on the machine weighs on all peers alike; the
// report prints the load average and warns when it exceeded the core count.
//
// Figures:
//
//  1. Full TLS handshakes per second at concurrency 1, 16 and 64: each
//     connection dials, completes a TLS handshake with SNI (Go's default
//     post-quantum ClientHello, ECDSA P-256 server certificate, no session
//     resumption), sends one byte, reads one byte and closes. p50/p99 of
//     that whole exchange.
//  2. Proxy CPU per 1,000 connections: utime+stime from /proc/PID/stat of
//     the proxy and its worker processes over the c=16 cell.
//  3. Copy throughput with 1 and 8 streams: a real ClientHello record, then
//     plain bytes to a sink that counts them after the client half-closes.
//  4. Memory and fds per idle proxied connection: N connections complete a
//     handshake and one exchange, then stay idle; the proxy's growth in Pss
//     (smaps_rollup), RSS and open fds, divided by N. Runs first, on freshly
//     started proxies.
//
// Proxies get the same number of workers (GOMAXPROCS, nbthread,
// worker_processes; -workers, default 2). Their configs are written to a
// temporary folder; every process is stopped at the end, on failure and on
// Ctrl-C. When HAProxy or nginx (with its stream module) is missing and the
// program runs as root, it installs them with apt-get (-install=false turns
// this off); otherwise that peer is skipped and the report says why.
//
// All traffic stays on 127.0.0.1, and every loop is bounded in time and
// count.
package main
