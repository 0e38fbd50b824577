package catalog

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/meshgate/meshgate/mtls"
	"github.com/meshgate/meshgate/pki"
)

// This file cannot use clustertest (it imports this package); it makes
// its certificates with crypto/x509 directly.

const gatewayID = "spiffe://cluster.local/ns/meshgate-system/sa/meshgate"

type miniCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newMiniCA(t testing.TB) *miniCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &miniCA{cert: c, key: key}
}

func (ca *miniCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

func (ca *miniCA) leaf(t testing.TB, id string) *tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	u, _ := url.Parse(id)
	tmpl := &x509.Certificate{SerialNumber: serial, URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// records is a node's signer and verifier: its certificate from ca, the
// roots of ca, gateway identities only.
func records(t testing.TB, ca *miniCA) (*mtls.Records, *mtls.Source) {
	src := mtls.NewSource(ca.leaf(t, gatewayID), ca.pool())
	id, err := pki.ParseIdentity(gatewayID)
	if err != nil {
		t.Fatal(err)
	}
	return mtls.NewRecords(src, mtls.AuthorizeOneOf(id)), src
}

// sealWith signs body as an owner holding r would.
func sealWith(t testing.TB, r Signer, body []byte, chain bool) seal {
	t.Helper()
	der, ch, err := r.Sign(recordDigest("meshgate", body))
	if err != nil {
		t.Fatal(err)
	}
	sig, err := rawSig(der)
	if err != nil {
		t.Fatal(err)
	}
	s := seal{KeyID: keyIDOf(ch[0]), Sig: sig}
	if chain {
		s.Chain = ch
	}
	return s
}

func signedDelta(t testing.TB, r Signer, d delta) []byte {
	d.Seal = sealWith(t, r, deltaBody(d), false)
	return encodeDelta(d)
}

func signedState(t testing.TB, r Signer, s state) []byte {
	s.Seal = sealWith(t, r, stateBody(s), true)
	return encodeState(s)
}

func trustNode(t *testing.T, ca *miniCA) (*Catalog, *mtls.Source) {
	t.Helper()
	rec, src := records(t, ca)
	cfg := DefaultConfig()
	cfg.Name = "self"
	cfg.Network = "net-a"
	cfg.BindAddr = "127.0.0.1:0"
	cfg.Signer, cfg.Verifier = rec, rec
	cfg.SyncInterval = time.Millisecond
	cfg.MaintenanceInterval = time.Hour // tick is driven by the test
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c, src
}

func visible(c *Catalog) []string {
	var out []string
	for _, e := range c.Snapshot().Entries {
		out = append(out, e.Owner+"/"+e.ID+"@"+e.Addr)
	}
	return out
}

func tep(addr string) Endpoint {
	return Endpoint{Service: "reviews.default.svc.cluster.local", Port: 9080, Addr: addr}
}

// TestRecordTrustHostile feeds one node, message by message, what a rogue
// member or a relay could send; each row says what must be dropped, why,
// and what the view holds afterwards.
func TestRecordTrustHostile(t *testing.T) {
	ca, other := newMiniCA(t), newMiniCA(t)
	c, _ := trustNode(t, ca)
	victim, _ := records(t, ca)
	peer, _ := records(t, ca)
	rogue, _ := records(t, other) // valid chain, another mesh's roots
	workloadSrc := mtls.NewSource(ca.leaf(t, "spiffe://cluster.local/ns/default/sa/web"), ca.pool())
	workload := mtls.NewRecords(workloadSrc, nil) // signs with a mesh cert of a workload identity

	c.mu.Lock()
	for _, n := range []string{"victim", "peer", "rogue", "nobody", "workload"} {
		c.view.setAlive(n, true)
	}
	c.mu.Unlock()
	deliver := func(b []byte) { (*delegate)(c).NotifyMsg(b) }

	// The victim and a peer prove their identities with signed states.
	deliver(signedState(t, victim, state{Owner: "victim", Ver: version{5, 2}, Eps: map[string]Endpoint{"v1": tep("10.0.0.1:9080")}}))
	deliver(signedState(t, peer, state{Owner: "peer", Ver: version{3, 1}, Eps: map[string]Endpoint{}}))
	want := []string{"victim/v1@10.0.0.1:9080"}
	if got := visible(c); !equalStrings(got, want) {
		t.Fatalf("after the victim's signed state: entries %v, want %v", got, want)
	}

	goodDelta := signedDelta(t, victim, delta{Owner: "victim", Ver: version{5, 3}, ID: "v2", Ep: tep("10.0.0.2:9080")})
	victimLeaf := func() [keyIDLen]byte {
		_, ch, _ := victim.Sign(make([]byte, 32))
		return keyIDOf(ch[0])
	}()
	forgedAsVictim := func(d delta) []byte {
		// Signed by the rogue's key, naming the victim's key ID.
		d.Seal = sealWith(t, rogue, deltaBody(d), false)
		d.Seal.KeyID = victimLeaf
		return encodeDelta(d)
	}
	renamed := func() []byte {
		// A valid delta of the peer with the owner field rewritten to the
		// victim: the signed content no longer matches its envelope.
		b := signedDelta(t, peer, delta{Owner: "peer", Ver: version{5, 4}, ID: "v3", Ep: tep("10.6.6.6:9080")})
		return append([]byte{msgDelta, 6}, append([]byte("victim"), b[6:]...)...)
	}()
	stripped := func() []byte {
		d := delta{Owner: "victim", Ver: version{5, 5}, ID: "v4", Ep: tep("10.6.6.7:9080")}
		return encodeDelta(d) // no signature at all
	}()

	for _, tc := range []struct {
		name   string
		in     []byte
		reason string // drop counter that must grow
		want   []string
	}{
		{"delta signed by another CA's key naming the victim's key", forgedAsVictim(delta{Owner: "victim", Ver: version{5, 9}, ID: "evil", Ep: tep("10.6.6.6:9080")}),
			DropBadSignature, want},
		{"delta of the rogue itself", signedDelta(t, rogue, delta{Owner: "rogue", Ver: version{1, 1}, ID: "r", Ep: tep("10.6.6.1:9080")}),
			DropUntrusted, want},
		{"delta of an owner with no known chain", signedDelta(t, victim, delta{Owner: "nobody", Ver: version{1, 1}, ID: "n", Ep: tep("10.6.6.2:9080")}),
			DropUntrusted, want},
		{"owner name rewritten after signing", renamed, DropUntrusted, want},
		{"unsigned delta", stripped, DropBadSignature, want},
		{"state with a chain from another CA", signedState(t, rogue, state{Owner: "rogue", Ver: version{1, 1}, Eps: map[string]Endpoint{"r": tep("10.6.6.1:9080")}}),
			DropUntrusted, want},
		{"state claiming the victim's name with the rogue's chain", signedState(t, rogue, state{Owner: "victim", Ver: version{6, 1}, Eps: map[string]Endpoint{"evil": tep("10.6.6.6:9080")}}),
			DropUntrusted, want},
		{"state with a mesh chain of a workload identity", signedState(t, workload, state{Owner: "workload", Ver: version{1, 1}, Eps: map[string]Endpoint{"w": tep("10.6.6.3:9080")}}),
			DropUntrusted, want},
		{"state claiming the victim's name signed by the peer's key with the victim's chain", func() []byte {
			s := state{Owner: "victim", Ver: version{6, 1}, Eps: map[string]Endpoint{"evil": tep("10.6.6.6:9080")}}
			good := sealWith(t, victim, stateBody(s), true)
			s.Seal = sealWith(t, peer, stateBody(s), false)
			s.Seal.Chain = good.Chain
			return encodeState(s)
		}(), DropBadSignature, want},
		{"the victim's own delta", goodDelta, "", []string{"victim/v1@10.0.0.1:9080", "victim/v2@10.0.0.2:9080"}},
		{"replayed old state of the victim", signedState(t, victim, state{Owner: "victim", Ver: version{5, 1}, Eps: map[string]Endpoint{"old": tep("10.0.0.9:9080")}}),
			"", []string{"victim/v1@10.0.0.1:9080", "victim/v2@10.0.0.2:9080"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := c.Stats()
			deliver(tc.in)
			after := c.Stats()
			if tc.reason != "" && dropped(after, tc.reason) != dropped(before, tc.reason)+1 {
				t.Errorf("NotifyMsg(%s): %s drops went %d -> %d, want one more", tc.name, tc.reason, dropped(before, tc.reason), dropped(after, tc.reason))
			}
			if got := visible(c); !equalStrings(got, tc.want) {
				t.Errorf("after %s: entries %v, want %v", tc.name, got, tc.want)
			}
		})
	}

	// The victim kept its trust; the rogue and the workload identity are
	// listed untrusted with the reason; a member never heard from says so.
	c.mu.Lock()
	for _, n := range []string{"victim", "peer", "rogue", "nobody", "workload"} {
		c.members[n] = &memberInfo{status: StatusAlive}
	}
	c.mu.Unlock()
	reasons := map[string]string{}
	for _, m := range c.Members() {
		if m.Trusted != (m.TrustReason == "") {
			t.Errorf("member %s: Trusted = %v with reason %q", m.Name, m.Trusted, m.TrustReason)
		}
		reasons[m.Name] = m.TrustReason
	}
	for name, want := range map[string]string{"victim": "", "peer": "", "self": "",
		"rogue": "does not chain", "workload": "not one of", "nobody": reasonNoRecord} {
		got, ok := reasons[name]
		if !ok || (want == "" && got != "") || (want != "" && !strings.Contains(got, want)) {
			t.Errorf("member %s trust reason = %q, want %q", name, got, want)
		}
	}
	// The unverifiable deltas asked their owners for their states.
	c.mu.Lock()
	_, askedNobody := c.lastSync["nobody"]
	c.mu.Unlock()
	if !askedNobody {
		t.Errorf("a delta of an owner with no known chain sent no full-state request to it")
	}
}

// Root rotation: after the roots change, cached chains are verified again
// and an owner whose chain no longer verifies loses its endpoints here.
func TestRootRotationReverifiesChains(t *testing.T) {
	ca := newMiniCA(t)
	c, src := trustNode(t, ca)
	owner, _ := records(t, ca)
	c.mu.Lock()
	c.view.setAlive("owner", true)
	c.members["owner"] = &memberInfo{status: StatusAlive}
	c.mu.Unlock()
	(*delegate)(c).NotifyMsg(signedState(t, owner, state{Owner: "owner", Ver: version{1, 1}, Eps: map[string]Endpoint{"a": tep("10.0.0.1:9080")}}))
	if got := visible(c); len(got) != 1 {
		t.Fatalf("entries after the owner's state = %v, want its one endpoint", got)
	}
	src.SetRoots(newMiniCA(t).pool()) // the old root is gone
	c.tick(time.Now())
	if got := visible(c); len(got) != 0 {
		t.Fatalf("entries after the roots rotated away from the owner's CA = %v, want none", got)
	}
	for _, m := range c.Members() {
		if m.Name == "owner" && (m.Trusted || !strings.Contains(m.TrustReason, "does not chain")) {
			t.Fatalf("owner after root rotation: Trusted = %v, reason %q; want untrusted, chain refused", m.Trusted, m.TrustReason)
		}
	}
	src.SetRoots(ca.pool()) // rotated back: trusted again, its state is asked for
	c.tick(time.Now())
	for _, m := range c.Members() {
		if m.Name == "owner" && !m.Trusted {
			t.Fatalf("owner after its root came back: untrusted (%s)", m.TrustReason)
		}
	}
}

func TestRegisterRefusesReservedAddress(t *testing.T) {
	var ls Listeners
	ls.Set("admin", "127.0.0.1:15000")
	ls.Set("proxy", "0.0.0.0:15443")
	ls.Set("raft", "[::]:8300")
	cfg := DefaultConfig()
	cfg.Name, cfg.Network, cfg.BindAddr, cfg.Unsigned = "self", "net-a", "127.0.0.1:0", true
	cfg.Reserved = &ls
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	for _, tc := range []struct {
		addr, listener string
	}{
		{"127.0.0.1:15000", "admin"},
		{"localhost:15000", "admin"},
		{"0.0.0.0:15000", "admin"},
		{"127.0.0.9:15443", "proxy"},
		{"[::1]:8300", "raft"},
		{"[::ffff:127.0.0.1]:15443", "proxy"},
		{"127.0.0.2:15000", ""}, // admin is bound to 127.0.0.1 only
		{"192.0.2.1:15443", ""}, // TEST-NET: not an address of this host
	} {
		err := c.Register(Registration{ID: "r", Endpoint: ep(tc.addr)})
		switch {
		case tc.listener == "" && err != nil:
			t.Errorf("Register(%s) error = %v, want nil", tc.addr, err)
		case tc.listener != "" && (!errors.Is(err, ErrReserved) || !errors.Is(err, ErrInvalidEndpoint) || !strings.Contains(err.Error(), tc.listener)):
			t.Errorf("Register(%s) error = %v, want ErrReserved naming the %s listener", tc.addr, err, tc.listener)
		}
	}
}

func dropped(s Stats, reason string) uint64 {
	switch reason {
	case DropBadSignature:
		return s.DroppedBadSignature
	case DropUntrusted:
		return s.DroppedUntrusted
	case DropReserved:
		return s.DroppedReserved
	}
	return 0
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// BenchmarkRecordSign is the owner's cost per record: the seal of one
// delta (SHA-256 of the body, ECDSA P-256 sign, DER to r||s).
func BenchmarkRecordSign(b *testing.B) {
	ca := newMiniCA(b)
	c, _ := benchNode(b, ca)
	body := deltaBody(delta{Owner: "self", Ver: version{1, 1}, ID: "r1", Ep: testEp})
	c.mu.Lock()
	defer c.mu.Unlock()
	for b.Loop() {
		if s := c.sealLocked(body, false); len(s.Sig) != sigLen {
			b.Fatal("no signature")
		}
	}
}

// BenchmarkRecordVerify is a receiver's cost per new delta: the signature
// checked with the owner's cached key (relayed copies already applied are
// dropped before it). verify=chain adds what a full state from an owner
// whose chain is not cached costs (parse and verify the chain, then the
// signature).
func BenchmarkRecordVerify(b *testing.B) {
	ca := newMiniCA(b)
	c, _ := benchNode(b, ca)
	owner, _ := records(b, ca)
	d := delta{Owner: "owner", Ver: version{1, 1}, ID: "r1", Ep: testEp}
	d.Seal = sealWith(b, owner, deltaBody(d), false)
	st := state{Owner: "owner", Ver: version{1, 1}, Eps: map[string]Endpoint{"r1": testEp}}
	st.Seal = sealWith(b, owner, stateBody(st), true)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.view.setAlive("owner", true)
	if !c.checkStateLocked(&st, stateBody(st), time.Now()) {
		b.Fatal("owner's state refused")
	}
	b.Run("verify=cached-key", func(b *testing.B) {
		body := deltaBody(d)
		for b.Loop() {
			if ok, _ := c.checkKeySealLocked("owner", body, d.Seal); !ok {
				b.Fatal("delta refused")
			}
		}
	})
	b.Run("verify=chain", func(b *testing.B) {
		body := stateBody(st)
		for b.Loop() {
			delete(c.trust, "owner")
			if !c.checkStateLocked(&st, body, time.Now()) {
				b.Fatal("state refused")
			}
		}
	})
}

func benchNode(b *testing.B, ca *miniCA) (*Catalog, *mtls.Source) {
	rec, src := records(b, ca)
	cfg := DefaultConfig()
	cfg.Name, cfg.Network, cfg.BindAddr = "self", "net-a", "127.0.0.1:0"
	cfg.Signer, cfg.Verifier = rec, rec
	c, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c, src
}

// FuzzSignedNotifyMsg feeds arbitrary messages to a node that checks
// signatures and holds one trusted owner's endpoint: without the owner's
// key nothing the fuzzer sends may change the view.
func FuzzSignedNotifyMsg(f *testing.F) {
	ca, other := newMiniCA(f), newMiniCA(f)
	owner, _ := records(f, ca)
	rogue, _ := records(f, other)
	st := signedState(f, owner, state{Owner: "owner", Ver: version{2, 1}, Eps: map[string]Endpoint{"a": tep("10.0.0.1:9080")}})
	f.Add(signedDelta(f, owner, delta{Owner: "owner", Ver: version{2, 1}, ID: "a", Delete: true})) // superseded by the state
	f.Add(signedDelta(f, rogue, delta{Owner: "owner", Ver: version{2, 2}, ID: "b", Ep: tep("10.6.6.6:9080")}))
	f.Add(signedState(f, rogue, state{Owner: "owner", Ver: version{3, 1}, Eps: map[string]Endpoint{}}))
	f.Add(encodeLeave(leaveIntent{Owner: "owner", Ver: version{9, 9}}))
	for _, b := range validMessages() {
		f.Add(b)
	}
	for _, h := range hostileMessages() {
		f.Add(h.in)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, _ := trustNode(t, ca)
		c.mu.Lock()
		c.view.setAlive("owner", true)
		c.mu.Unlock()
		(*delegate)(c).NotifyMsg(st)
		want := visible(c)
		if len(want) != 1 {
			t.Fatalf("the owner's signed state gave entries %v, want one", want)
		}
		(*delegate)(c).NotifyMsg(b)
		(*delegate)(c).MergeRemoteState(b, false)
		if got := visible(c); !equalStrings(got, want) {
			t.Fatalf("message %x changed the view of a signed catalog: %v, want %v", b, got, want)
		}
	})
}
