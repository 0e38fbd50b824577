package pki_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/pkitest"
	"github.com/meshgate/meshgate/pki/store"
)

// lookupBarrier holds every token lookup until n of them are waiting, so
// that n issuances are certainly in progress together. Its writes take
// at least a millisecond, like a disk's fsync: slow enough that audit
// batches wait for more records.
type lookupBarrier struct {
	*store.Memory
	mu      sync.Mutex
	n       int // 0: lookups pass
	waiting int
	release chan struct{}
}

func (b *lookupBarrier) arm(n int) {
	b.mu.Lock()
	b.n, b.release = n, make(chan struct{})
	b.mu.Unlock()
}

func (b *lookupBarrier) Apply(ctx context.Context, ops []pki.Op) error {
	time.Sleep(time.Millisecond) // a slow device, not synchronization
	return b.Memory.Apply(ctx, ops)
}

func (b *lookupBarrier) Get(ctx context.Context, key string) ([]byte, error) {
	b.mu.Lock()
	release := b.release
	if b.n > 0 && strings.HasPrefix(key, "pki/token/") {
		b.waiting++
		if b.waiting == b.n {
			close(release)
		}
	} else {
		release = nil
	}
	b.mu.Unlock()
	if release != nil {
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return b.Memory.Get(ctx, key)
}

// TestAuditLingerBatchesIssuancesInProgress: records of issuances that
// run together share one store write, however they are spread in time,
// and no batch (a lone issuance's included) waits for the linger to run
// out when nothing more is coming.
func TestAuditLingerBatchesIssuancesInProgress(t *testing.T) {
	for _, tc := range []struct {
		name  string
		calls int
	}{
		{"one issuance", 1},
		{"two issuances", 2},
		{"eight issuances", 8},
		{"thirty issuances", 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := &lookupBarrier{Memory: store.NewMemory()}
			cfg := pkitest.Config(t)
			cfg.RateLimit = 0
			// Long enough that only "nothing more is coming" can end the
			// wait: a test that waited for it would time out.
			cfg.AuditLinger = time.Second
			ca, err := pki.NewCA(t.Context(), cfg, st)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ca.Close() })
			tok, _, err := ca.CreateToken(t.Context(), pki.TokenRequest{Namespace: "default", ServiceAccount: "web"})
			if err != nil {
				t.Fatal(err)
			}
			csr, _ := pkitest.WorkloadCSR(t, web)
			// One issuance first, so that the CA has seen a slow write.
			if _, err := ca.Issue(t.Context(), pki.Request{CSR: csr, Credential: pki.BearerToken(tok)}); err != nil {
				t.Fatal(err)
			}
			st.arm(tc.calls)
			before := st.Applies()
			var wg sync.WaitGroup
			for range tc.calls {
				wg.Go(func() {
					if _, err := ca.Issue(t.Context(), pki.Request{CSR: csr, Credential: pki.BearerToken(tok)}); err != nil {
						t.Errorf("Issue() = %v", err)
					}
				})
			}
			wg.Wait()
			if writes := st.Applies() - before; writes != 1 {
				t.Errorf("%d issuances in progress together took %d audit writes, want 1", tc.calls, writes)
			}
			if n := pki.AuditLingerExpired(ca); n != 0 {
				t.Errorf("%d audit batches waited out the linger, want 0: every record was already enqueued", n)
			}
		})
	}
}
