package pki_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/pkitest"
	"github.com/meshgate/meshgate/pki/store"
)

// staleUses hides a token's use records from the List the CA makes
// before issuing with it, as a replica that has not yet applied the other
// nodes' writes would: only the store's conditional write can then tell a
// taken use from a free one. (Listing all tokens' uses sees them.)
type staleUses struct{ pki.Store }

func (s staleUses) List(ctx context.Context, prefix string) ([]pki.KV, error) {
	kvs, err := s.Store.List(ctx, prefix)
	if prefix == "pki/token-use/" {
		return kvs, err
	}
	out := kvs[:0]
	for _, kv := range kvs {
		if !strings.HasPrefix(kv.Key, "pki/token-use/") {
			out = append(out, kv)
		}
	}
	return out, err
}

// failingUses fails every write of a token use record while fail is set.
type failingUses struct {
	pki.Store
	mu   sync.Mutex
	fail bool
}

func (s *failingUses) set(fail bool) { s.mu.Lock(); s.fail = fail; s.mu.Unlock() }

func (s *failingUses) Apply(ctx context.Context, ops []pki.Op) error {
	s.mu.Lock()
	fail := s.fail
	s.mu.Unlock()
	for _, op := range ops {
		if fail && strings.HasPrefix(op.Key, "pki/token-use/") {
			return errors.New("store unavailable")
		}
	}
	return s.Store.Apply(ctx, ops)
}

// fleet opens n CA instances (nodes n0, n1, ...) over one store.
func fleet(t *testing.T, st pki.Store, n int, opts ...pki.Option) []*pki.CA {
	t.Helper()
	cfg := pkitest.Config(t)
	cfg.RateLimit = 0
	cas := make([]*pki.CA, n)
	for i := range cas {
		c := cfg
		c.NodeID = fmt.Sprintf("n%d", i)
		ca, err := pki.NewCA(t.Context(), c, st, opts...)
		if err != nil {
			t.Fatalf("pki.NewCA(node %s) = %v, want nil", c.NodeID, err)
		}
		t.Cleanup(func() { ca.Close() })
		cas[i] = ca
	}
	return cas
}

// TestTokenUsesExactAcrossInstances has several CA instances over one
// shared store issue, all at the same moment, with one use-limited token:
// exactly Uses requests get a certificate, every other one is refused as
// used up, and the store, the token list and the audit log agree.
func TestTokenUsesExactAcrossInstances(t *testing.T) {
	for _, tc := range []struct {
		name      string
		store     func(t *testing.T) pki.Store
		instances int
		uses      int
		calls     int
	}{
		{"memory store, 4 instances, 3 uses, 12 calls", memStore, 4, 3, 12},
		{"memory store, 8 instances, 1 use, 16 calls", memStore, 8, 1, 16},
		{"memory store, 2 instances, 7 uses, 8 calls", memStore, 2, 7, 8},
		{"file store, 3 instances, 3 uses, 9 calls", fileStore, 3, 3, 9},
		{"stale listings, 4 instances, 3 uses, 12 calls", func(t *testing.T) pki.Store { return staleUses{memStore(t)} }, 4, 3, 12},
		{"one instance, 3 uses, 10 calls", memStore, 1, 3, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cas := fleet(t, tc.store(t), tc.instances)
			csr, _ := pkitest.WorkloadCSR(t, web)
			// Several rounds, each with a new token, to give a lax count
			// many chances to let an extra certificate through.
			for round := range 4 {
				tok, info, err := cas[round%len(cas)].CreateToken(t.Context(), pki.TokenRequest{Namespace: "default", ServiceAccount: "web", Uses: tc.uses})
				if err != nil {
					t.Fatalf("CreateToken(uses %d) = %v", tc.uses, err)
				}
				start := make(chan struct{})
				errs := make([]error, tc.calls)
				certs := make([]*pki.Certificate, tc.calls)
				var wg sync.WaitGroup
				for i := range tc.calls {
					wg.Go(func() {
						<-start
						certs[i], errs[i] = cas[i%len(cas)].Issue(t.Context(), pki.Request{CSR: csr, Credential: pki.BearerToken(tok)})
					})
				}
				close(start)
				wg.Wait()

				issued := 0
				serials := map[string]bool{}
				for i, err := range errs {
					switch {
					case err == nil:
						issued++
						serials[certs[i].Serial.Text(16)] = true
					case !errors.Is(err, pki.ErrTokenUsedUp) || pki.ReasonOf(err) != pki.ReasonTokenUsedUp:
						t.Errorf("round %d: Issue(call %d on node n%d) = %v, want a certificate or ErrTokenUsedUp (reason %s)",
							round, i, i%len(cas), err, pki.ReasonTokenUsedUp)
					}
				}
				if issued != tc.uses || len(serials) != tc.uses {
					t.Fatalf("round %d: %d concurrent Issue calls on %d instances with a %d-use token issued %d certificates (%d serials), want exactly %d",
						round, tc.calls, len(cas), tc.uses, issued, len(serials), tc.uses)
				}

				// Every instance now refuses the token, and reports it used up.
				for i, ca := range cas {
					if _, err := ca.Issue(t.Context(), pki.Request{CSR: csr, Credential: pki.BearerToken(tok)}); !errors.Is(err, pki.ErrTokenUsedUp) {
						t.Errorf("round %d: Issue(node n%d, after the burst) = %v, want ErrTokenUsedUp", round, i, err)
					}
					list, err := ca.Tokens(t.Context())
					if err != nil {
						t.Fatalf("Tokens() = %v", err)
					}
					for _, ti := range list {
						if ti.ID == info.ID && ti.Used != tc.uses {
							t.Errorf("round %d: Tokens() on node n%d says token %s used %d times, want %d", round, i, ti.ID, ti.Used, tc.uses)
						}
					}
				}

				// The audit log holds one issued record per use, each with
				// its own use number.
				recs, err := cas[0].AuditLog(t.Context(), time.Time{})
				if err != nil {
					t.Fatalf("AuditLog() = %v", err)
				}
				useNums := map[int]int{}
				for _, r := range recs {
					if r.Caller == "token:"+info.ID && r.Outcome == pki.OutcomeIssued {
						useNums[r.TokenUse]++
					}
				}
				for u := 1; u <= tc.uses; u++ {
					if useNums[u] != 1 {
						t.Errorf("round %d: audit log has %d issued records with TokenUse %d, want 1 (all: %v)", round, useNums[u], u, useNums)
					}
				}
				if len(useNums) != tc.uses {
					t.Errorf("round %d: audit log TokenUse values %v, want exactly 1..%d", round, useNums, tc.uses)
				}
			}
		})
	}
}

func memStore(*testing.T) pki.Store { return store.NewMemory() }

func fileStore(t *testing.T) pki.Store {
	s, err := store.OpenFile(filepath.Join(t.TempDir(), "pki.journal"))
	if err != nil {
		t.Fatalf("store.OpenFile() = %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestTokenUseWriteFails: when the use cannot be recorded, nothing is
// signed, and the token keeps its uses for when the store recovers.
func TestTokenUseWriteFails(t *testing.T) {
	st := &failingUses{Store: store.NewMemory()}
	ca := fleet(t, st, 1)[0]
	tok, _, err := ca.CreateToken(t.Context(), pki.TokenRequest{Namespace: "default", ServiceAccount: "web", Uses: 1})
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := pkitest.WorkloadCSR(t, web)
	st.set(true)
	cert, err := ca.Issue(t.Context(), pki.Request{CSR: csr, Credential: pki.BearerToken(tok)})
	if !errors.Is(err, pki.ErrSigning) || cert != nil {
		t.Fatalf("Issue(use record write fails) = %v, %v; want no certificate and ErrSigning", cert, err)
	}
	st.set(false)
	if _, err := ca.Issue(t.Context(), pki.Request{CSR: csr, Credential: pki.BearerToken(tok)}); err != nil {
		t.Fatalf("Issue(store back) = %v, want a certificate: the failed write consumed no use", err)
	}
	if _, err := ca.Issue(t.Context(), pki.Request{CSR: csr, Credential: pki.BearerToken(tok)}); !errors.Is(err, pki.ErrTokenUsedUp) {
		t.Fatalf("Issue(second use of a 1-use token) = %v, want ErrTokenUsedUp", err)
	}
}

// TestTokenUseGivenBackWhenSigningFails: a use claimed for a request that
// the signer then refuses (here: the CA expired) is given back.
func TestTokenUseGivenBackWhenSigningFails(t *testing.T) {
	cfg := pkitest.Config(t)
	cfg.RootTTL = 48 * time.Hour
	clock := pkitest.NewClock(time.Now())
	ca, _ := pkitest.NewCA(t, cfg, pki.WithClock(clock.Now))
	tok, info, err := ca.CreateToken(t.Context(), pki.TokenRequest{Namespace: "default", ServiceAccount: "web", TTL: 96 * time.Hour, Uses: 1})
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(72 * time.Hour) // the root has expired, the token has not
	csr, _ := pkitest.WorkloadCSR(t, web)
	if _, err := ca.Issue(t.Context(), pki.Request{CSR: csr, Credential: pki.BearerToken(tok)}); !errors.Is(err, pki.ErrSigning) {
		t.Fatalf("Issue(CA expired) = %v, want ErrSigning", err)
	}
	list, err := ca.Tokens(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range list {
		if ti.ID == info.ID && ti.Used != 0 {
			t.Fatalf("Tokens() after a signing failure: used %d, want 0 (the use is given back)", ti.Used)
		}
	}
}

// TestTokenUseRefusalsConsumeNothing: requests refused before the use is
// claimed (another identity in the CSR, a TTL above the maximum) leave the
// token's uses intact.
func TestTokenUseRefusalsConsumeNothing(t *testing.T) {
	ca := fleet(t, store.NewMemory(), 1)[0]
	tok, _, err := ca.CreateToken(t.Context(), pki.TokenRequest{Namespace: "default", ServiceAccount: "web", Uses: 1})
	if err != nil {
		t.Fatal(err)
	}
	other, _ := pkitest.WorkloadCSR(t, pki.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "db"})
	if _, err := ca.Issue(t.Context(), pki.Request{CSR: other, Credential: pki.BearerToken(tok)}); !errors.Is(err, pki.ErrPermissionDenied) {
		t.Fatalf("Issue(CSR for another identity) = %v, want ErrPermissionDenied", err)
	}
	csr, _ := pkitest.WorkloadCSR(t, web)
	if _, err := ca.Issue(t.Context(), pki.Request{CSR: csr, TTL: 1000 * 24 * time.Hour, Credential: pki.BearerToken(tok)}); !errors.Is(err, pki.ErrTTLTooLong) {
		t.Fatalf("Issue(TTL too long) = %v, want ErrTTLTooLong", err)
	}
	if _, err := ca.Issue(t.Context(), pki.Request{CSR: csr, Credential: pki.BearerToken(tok)}); err != nil {
		t.Fatalf("Issue(after two refusals) = %v, want a certificate", err)
	}
}

// TestUnlimitedTokenFastPath: an unlimited token costs no store write
// beyond the audit batch, and its uses are still counted.
func TestUnlimitedTokenFastPath(t *testing.T) {
	for _, tc := range []struct {
		name       string
		uses       int
		wantWrites int // per certificate, issued one at a time
	}{
		{"unlimited", 0, 1},
		{"limited", 100, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := store.NewMemory()
			ca := fleet(t, st, 1)[0]
			tok, info, err := ca.CreateToken(t.Context(), pki.TokenRequest{Namespace: "default", ServiceAccount: "web", Uses: tc.uses})
			if err != nil {
				t.Fatal(err)
			}
			csr, _ := pkitest.WorkloadCSR(t, web)
			// The first issuance loads the token; count the next ones.
			if _, err := ca.Issue(t.Context(), pki.Request{CSR: csr, Credential: pki.BearerToken(tok)}); err != nil {
				t.Fatal(err)
			}
			const n = 5
			before := st.Applies()
			for range n {
				if _, err := ca.Issue(t.Context(), pki.Request{CSR: csr, Credential: pki.BearerToken(tok)}); err != nil {
					t.Fatal(err)
				}
			}
			if got := st.Applies() - before; got != n*tc.wantWrites {
				t.Errorf("%d sequential issuances with a %d-use token made %d store writes, want %d", n, tc.uses, got, n*tc.wantWrites)
			}
			list, err := ca.Tokens(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			for _, ti := range list {
				if ti.ID == info.ID && ti.Used != n+1 {
					t.Errorf("Tokens() says used %d, want %d", ti.Used, n+1)
				}
			}
		})
	}
}
