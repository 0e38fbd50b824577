package api_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	cflog "github.com/cloudflare/cfssl/log"
	"github.com/cloudflare/cfssl/signer"
	"github.com/cloudflare/cfssl/signer/local"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	pb "istio.io/api/security/v1alpha1"

	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/pkitest"
	"github.com/meshgate/meshgate/pki/store"
)

// The gRPC benchmark's load comes from a child process (this test binary
// re-executed with benchClientEnv set), so that the parent's CPU time is
// the server's alone.
const benchClientEnv = "MESHGATE_PKI_BENCH_CLIENT"

func TestMain(m *testing.M) {
	if os.Getenv(benchClientEnv) != "" {
		os.Exit(runBenchClient())
	}
	os.Exit(m.Run())
}

// cpuTime is this process's user+system CPU time.
func cpuTime() time.Duration {
	u, s := cpuTimes()
	return u + s
}

func cpuTimes() (user, sys time.Duration) {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

// meter reports CPU per certificate and its inverse, certificates per
// second per core, for n certificates; and, as figures that the machine's
// other load does not move, heap allocations and read/write system calls
// per certificate.
type meter struct {
	user0, sys0 time.Duration
	wall0       time.Time
	allocs0     uint64
	bytes0      uint64
	io0         [2]int64
}

func startMeter() meter {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	u, s := cpuTimes()
	return meter{user0: u, sys0: s, wall0: time.Now(), allocs0: ms.Mallocs, bytes0: ms.TotalAlloc, io0: syscalls()}
}

// syscalls returns this process's read and write system call counts
// (/proc/self/io syscr, syscw), or zeros where that file does not exist.
func syscalls() [2]int64 {
	var out [2]int64
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return out
	}
	for line := range strings.Lines(string(b)) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ": ")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "syscr":
			out[0] = n
		case "syscw":
			out[1] = n
		}
	}
	return out
}

func (m meter) cpu() time.Duration { return m.user0 + m.sys0 }

func (m meter) report(b *testing.B, n int) float64 {
	u, s := cpuTimes()
	cpu := u - m.user0 + s - m.sys0
	wall := time.Since(m.wall0)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	io := syscalls()
	b.ReportMetric(float64(ms.Mallocs-m.allocs0)/float64(n), "allocs/cert")
	b.ReportMetric(float64(ms.TotalAlloc-m.bytes0)/float64(n), "B/cert")
	b.ReportMetric(float64(io[0]-m.io0[0])/float64(n), "reads/cert")
	b.ReportMetric(float64(io[1]-m.io0[1])/float64(n), "writes/cert")
	b.ReportMetric((s-m.sys0).Seconds()/float64(n)*1e6, "sys-µs/cert")
	perCert := cpu.Seconds() / float64(n)
	perCore := 1 / perCert
	b.ReportMetric(perCert*1e6, "cpu-µs/cert")
	b.ReportMetric(perCore, "certs/s/core")
	b.ReportMetric(float64(n)/wall.Seconds(), "certs/s")
	return perCore
}

// benchCA is an ECDSA P-256 root like the CA's default.
func benchCA(b *testing.B) (*ecdsa.PrivateKey, *x509.Certificate) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{Organization: []string{"cluster.local"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * 365 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return key, cert
}

// BenchmarkIssuance measures, in one run: the limit (parse + check the
// CSR, x509.CreateCertificate, PEM), cfssl's signer in process, the CA in
// process (token, CSR checks, cfssl, audit group commit), and the gRPC API
// over TLS on loopback with 16 concurrent clients in another process,
// with the audit log in memory and in an fsynced file journal. Each row
// reports CPU per certificate (of the server process for the gRPC rows)
// and its inverse, heap allocations and read/write system calls per
// certificate; the last row reports ratios to the limit.
func BenchmarkIssuance(b *testing.B) {
	cflog.Level = cflog.LevelCritical
	key, caCert := benchCA(b)
	csr, _ := pkitest.WorkloadCSR(b, web)
	id := web.URL()

	limitOnce := func(csr []byte) error {
		blk, _ := pem.Decode(csr)
		req, err := x509.ParseCertificateRequest(blk.Bytes)
		if err != nil {
			return err
		}
		if err := req.CheckSignature(); err != nil {
			return err
		}
		serial := make([]byte, 20)
		rand.Read(serial)
		serial[0] &= 0x7f
		now := time.Now()
		tmpl := &x509.Certificate{
			SerialNumber: new(big.Int).SetBytes(serial), NotBefore: now.Add(-2 * time.Minute), NotAfter: now.Add(24 * time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			URIs:        []*url.URL{id}, BasicConstraintsValid: true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, req.PublicKey, key)
		if err != nil {
			return err
		}
		_ = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		return nil
	}
	b.Run("limit", func(b *testing.B) {
		m := startMeter()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := limitOnce(csr); err != nil {
					b.Error(err)
					return
				}
			}
		})
		m.report(b, b.N)
	})

	b.Run("cfssl-inprocess", func(b *testing.B) {
		s, err := local.NewSigner(key, caCert, signer.DefaultSigAlgo(key), pki.SigningPolicy())
		if err != nil {
			b.Fatal(err)
		}
		m := startMeter()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				cfsslOnce(b, s, csr)
			}
		})
		m.report(b, b.N)
	})

	b.Run("ca-inprocess", func(b *testing.B) {
		cfg := pkitest.Config(b)
		cfg.Logger = nil
		cfg.RateLimit = 0
		ca, _ := pkitest.NewCA(b, cfg)
		tok, _, err := ca.CreateToken(b.Context(), pki.TokenRequest{Namespace: "default", ServiceAccount: "web", TTL: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		m := startMeter()
		b.SetParallelism(8) // 16 concurrent callers on 2 cores, as the gRPC row
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := ca.Issue(context.Background(), pki.Request{CSR: csr, Credential: pki.BearerToken(tok)}); err != nil {
					b.Error(err)
					return
				}
			}
		})
		m.report(b, b.N)
	})

	for _, st := range []string{"memstore", "filestore"} {
		b.Run("grpc16-"+st, func(b *testing.B) {
			c := startBenchClient(b, st == "filestore")
			m := startMeter()
			c.run(b, b.N)
			m.report(b, b.N)
			c.reportWrites(b, b.N)
		})
	}

	// The machine these figures come from is shared, and its load swings
	// within seconds, so the rows above are not comparable with each
	// other. This row interleaves short samples of the limit, cfssl in
	// process, the CA in process and the gRPC API (audit log in memory and
	// in the fsynced journal), and reports the median of the per-round
	// ratios.
	b.Run("ratio-interleaved", func(b *testing.B) {
		s, err := local.NewSigner(key, caCert, signer.DefaultSigAlgo(key), pki.SigningPolicy())
		if err != nil {
			b.Fatal(err)
		}
		c := startBenchClient(b, false)
		cf := startBenchClient(b, true)
		cfg := pkitest.Config(b)
		cfg.Logger = nil
		cfg.RateLimit = 0
		ca, _ := pkitest.NewCA(b, cfg)
		tok, _, err := ca.CreateToken(b.Context(), pki.TokenRequest{Namespace: "default", ServiceAccount: "web", TTL: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		const n = 600
		var cfsslR, caR, grpcR, fileR []float64
		for range 7 { // fixed: b.N is not used by this row
			lim := parallelRate(n, func() { limitOnce(csr) })
			cfs := parallelRate(n, func() { cfsslOnce(b, s, csr) })
			inproc := parallelRate(n, func() {
				if _, err := ca.Issue(context.Background(), pki.Request{CSR: csr, Credential: pki.BearerToken(tok)}); err != nil {
					b.Error(err)
				}
			})
			caR = append(caR, inproc/lim)
			m := startMeter()
			c.run(b, n)
			g := 1 / ((cpuTime() - m.cpu()).Seconds() / n)
			m = startMeter()
			cf.run(b, n)
			gf := 1 / ((cpuTime() - m.cpu()).Seconds() / n)
			cfsslR = append(cfsslR, cfs/lim)
			grpcR = append(grpcR, g/lim)
			fileR = append(fileR, gf/lim)
		}
		b.ReportMetric(median(cfsslR), "cfssl-x-limit")
		b.ReportMetric(median(caR), "ca-x-limit")
		b.ReportMetric(median(grpcR), "grpc16-x-limit")
		b.ReportMetric(median(fileR), "grpc16-file-x-limit")
	})
}

// parallelRate runs f n times on every core and returns certificates per
// second per core of CPU time.
func parallelRate(n int, f func()) float64 {
	m := startMeter()
	var wg sync.WaitGroup
	var next atomic.Int64
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				f()
			}
		})
	}
	wg.Wait()
	return 1 / ((cpuTime() - m.cpu()).Seconds() / float64(n))
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func cfsslOnce(b *testing.B, s *local.Signer, csr []byte) {
	now := time.Now()
	serial := make([]byte, 20)
	rand.Read(serial)
	serial[0] &= 0x7f
	if _, err := s.Sign(signer.SignRequest{
		Request: string(csr), Profile: pki.ProfileWorkload, Hosts: []string{web.String()},
		Serial: new(big.Int).SetBytes(serial), NotBefore: now.Add(-2 * time.Minute), NotAfter: now.Add(24 * time.Hour),
	}); err != nil {
		b.Error(err)
	}
}

// benchClient is the parent's handle on the load-generating child.
type benchClient struct {
	in      io.Writer
	out     *bufio.Scanner
	writes  interface{ Applies() int }
	writes0 int
}

// startBenchClient serves a new CA's API (audit log in memory or in a
// file journal) and starts the child process that loads it.
func startBenchClient(b *testing.B, fileStore bool) *benchClient {
	cfg := pkitest.Config(b)
	cfg.Logger = nil
	cfg.RateLimit = 0
	var st pki.Store = store.NewMemory()
	if fileStore {
		fs, err := store.OpenFile(filepath.Join(b.TempDir(), "pki.journal"))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { fs.Close() })
		st = fs
	}
	ca, err := pki.NewCA(b.Context(), cfg, st)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ca.Close() })
	ts := serveCA(b, ca)
	tok, _, err := ca.CreateToken(b.Context(), pki.TokenRequest{Namespace: "default", ServiceAccount: "web", TTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	rootFile := filepath.Join(b.TempDir(), "root.pem")
	os.WriteFile(rootFile, []byte(strings.Join(ca.RootsPEM(), "")), 0o600)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), benchClientEnv+"="+ts.addr, "MESHGATE_PKI_BENCH_TOKEN="+tok, "MESHGATE_PKI_BENCH_ROOT="+rootFile)
	cmd.Stderr = os.Stderr
	in, _ := cmd.StdinPipe()
	outPipe, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		in.Close() // the child exits at EOF
		cmd.Wait()
	})
	c := &benchClient{in: in, out: bufio.NewScanner(outPipe), writes: st.(interface{ Applies() int })}
	if !c.out.Scan() || c.out.Text() != "ready" {
		b.Fatalf("bench client did not start: %q %v", c.out.Text(), c.out.Err())
	}
	c.writes0 = c.writes.Applies()
	return c
}

// run has the child send n requests and waits for them.
func (c *benchClient) run(b *testing.B, n int) {
	fmt.Fprintf(c.in, "%d\n", n)
	if !c.out.Scan() {
		b.Fatalf("bench client died: %v", c.out.Err())
	}
	fields := strings.Fields(c.out.Text())
	if len(fields) != 2 || fields[0] != "done" {
		b.Fatalf("bench client said %q", c.out.Text())
	}
	if errs, _ := strconv.Atoi(fields[1]); errs != 0 {
		b.Fatalf("bench client saw %d errors in %d requests", errs, n)
	}
}

// reportWrites reports how many certificates one store write carried.
func (c *benchClient) reportWrites(b *testing.B, n int) {
	if w := c.writes.Applies() - c.writes0; w > 0 {
		b.ReportMetric(float64(n)/float64(w), "certs/store-write")
	}
}

// serveCA serves ca's API on loopback until the benchmark ends.
func serveCA(b *testing.B, ca *pki.CA) *testServer {
	srv, err := apiNewServer(ca)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := listenLoopback()
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	b.Cleanup(func() {
		cancel()
		<-done
	})
	return &testServer{ca: ca, srv: srv, addr: ln.Addr().String(), roots: ca.RootPool()}
}

// runBenchClient is the child process: 16 gRPC clients, each on its own
// connection, sending CreateCertificate with a bearer token. It reads a
// count on stdin, runs that many requests, and answers "done <errors>".
func runBenchClient() int {
	const clients = 16
	addr := os.Getenv(benchClientEnv)
	tok := os.Getenv("MESHGATE_PKI_BENCH_TOKEN")
	rootPEM, err := os.ReadFile(os.Getenv("MESHGATE_PKI_BENCH_ROOT"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	// A few distinct CSRs; the server does the full work for each request.
	var csrs []string
	for range 32 {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{web.URL()}}, k)
		csrs = append(csrs, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})))
	}
	var conns []pb.IstioCertificateServiceClient
	for range clients {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "istiod.istio-system.svc"})))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer cc.Close()
		conns = append(conns, pb.NewIstioCertificateServiceClient(cc))
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
	// Warm up every connection (handshakes are not part of the measure).
	for _, c := range conns {
		if _, err := c.CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: csrs[0]}); err != nil {
			fmt.Fprintln(os.Stderr, "warm-up:", err)
			return 1
		}
	}
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		n, err := strconv.Atoi(strings.TrimSpace(in.Text()))
		if err != nil {
			return 1
		}
		var next, errs atomic.Int64
		var wg sync.WaitGroup
		for i := range clients {
			wg.Go(func() {
				for {
					j := next.Add(1)
					if j > int64(n) {
						return
					}
					cctx, cancel := context.WithTimeout(ctx, time.Minute)
					_, err := conns[i].CreateCertificate(cctx, &pb.IstioCertificateRequest{Csr: csrs[j%int64(len(csrs))]})
					cancel()
					if err != nil {
						errs.Add(1)
						fmt.Fprintln(os.Stderr, err)
					}
				}
			})
		}
		wg.Wait()
		fmt.Printf("done %d\n", errs.Load())
	}
	return 0
}
