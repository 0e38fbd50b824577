package mtls_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/meshgate/meshgate/mtls"
	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/pkitest"
)

var (
	gatewayID = pki.Identity{TrustDomain: "cluster.local", Namespace: "istio-system", ServiceAccount: "meshgate"}
	workload  = pki.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "web"}
)

// meshCA is a real CA (cfssl signing) issuing node certificates.
type meshCA struct {
	ca *pki.CA
}

func newMeshCA(t *testing.T) *meshCA {
	ca, _ := pkitest.NewCA(t, pkitest.Config(t))
	return &meshCA{ca: ca}
}

func (m *meshCA) cert(t *testing.T, id pki.Identity) *tls.Certificate {
	t.Helper()
	c, err := m.ca.NodeCertificate(t.Context(), pki.NodeRequest{Identity: id})
	if err != nil {
		t.Fatalf("NodeCertificate(%s) = %v", id, err)
	}
	return c
}

func (m *meshCA) roots(t *testing.T) *x509.CertPool {
	p := x509.NewCertPool()
	for _, r := range m.ca.Info().Roots {
		p.AddCert(r)
	}
	return p
}

// pair listens on loopback with srv and dials it with cli; it returns the
// server's handshake error and the client's connection (nil on failure).
func pair(t *testing.T, srv, cli *tls.Config) (serverErr error, c *tls.Conn, clientErr error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	errc := make(chan error, 1)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			errc <- err
			return
		}
		ts := s.(*tls.Conn)
		s.SetDeadline(time.Now().Add(10 * time.Second))
		if err := ts.Handshake(); err != nil {
			s.Close()
			errc <- err
			return
		}
		errc <- nil
		// Echo lines until the client goes away.
		r := bufio.NewReader(s)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				s.Close()
				return
			}
			s.Write([]byte(line))
		}
	}()
	d := &tls.Dialer{Config: cli}
	conn, cerr := d.DialContext(t.Context(), "tcp", ln.Addr().String())
	if cerr == nil {
		tc := conn.(*tls.Conn)
		// In TLS 1.3 the client learns of a refused client certificate on
		// its first read.
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := tc.Write([]byte("ping\n")); err != nil {
			cerr = err
		} else if line, err := bufio.NewReader(tc).ReadString('\n'); err != nil || line != "ping\n" {
			cerr = errors.Join(errors.New("echo failed"), err)
		}
		if cerr == nil {
			c = tc
			t.Cleanup(func() { tc.Close() })
		} else {
			tc.Close()
		}
	}
	return <-errc, c, cerr
}

func TestMutualHandshakeAndIdentity(t *testing.T) {
	m := newMeshCA(t)
	a := mtls.NewSource(m.cert(t, gatewayID), m.roots(t))
	b := mtls.NewSource(m.cert(t, gatewayID), m.roots(t))
	auth := mtls.AuthorizeOneOf(gatewayID)
	serr, c, cerr := pair(t, mtls.MutualConfig(a, auth), mtls.MutualConfig(b, auth))
	if serr != nil || cerr != nil {
		t.Fatalf("handshake between two gateway identities: server %v, client %v; want both nil", serr, cerr)
	}
	id, err := mtls.LeafIdentity(c.ConnectionState().PeerCertificates[0])
	if err != nil || id != gatewayID {
		t.Fatalf("LeafIdentity(server leaf) = %v, %v; want %v", id, err, gatewayID)
	}
}

func TestRefusals(t *testing.T) {
	m := newMeshCA(t)
	other := newMeshCA(t) // another mesh: another root
	gw := m.cert(t, gatewayID)
	auth := mtls.AuthorizeOneOf(gatewayID)
	rogueRoot, rogueKey := selfRoot(t)

	tests := []struct {
		name string
		cert *tls.Certificate // the dialling client's certificate
		auth mtls.Authorizer  // the server's authorizer
		want string           // in the server's error
	}{
		{name: "workload identity of the same mesh", cert: m.cert(t, workload), auth: auth, want: "not one of the 1 allowed"},
		{name: "gateway identity from another root", cert: other.cert(t, gatewayID), auth: auth, want: "does not chain"},
		{name: "other trust domain", cert: m.cert(t, workload), auth: mtls.AuthorizeTrustDomain("example.org"), want: "trust domain is not example.org"},
		{name: "no URI SAN", cert: leafFrom(t, rogueRoot, rogueKey, nil, time.Hour), auth: auth, want: "no URI SAN"},
		{name: "two URI SANs", cert: leafFrom(t, rogueRoot, rogueKey, []string{gatewayID.String(), workload.String()}, time.Hour), auth: auth, want: "more than one URI SAN"},
		{name: "URI SAN not a workload identity", cert: leafFrom(t, rogueRoot, rogueKey, []string{"spiffe://cluster.local/gateway"}, time.Hour), auth: auth, want: "not a SPIFFE workload identity"},
		{name: "expired", cert: leafFrom(t, rogueRoot, rogueKey, []string{gatewayID.String()}, -time.Hour), auth: auth, want: "does not chain"},
		{name: "nil authorizer", cert: gw, auth: nil, want: "no authorizer"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			roots := m.roots(t)
			roots.AddCert(rogueRoot) // trust the rogue root so the SAN rows reach the SAN checks
			srv := mtls.NewSource(gw, roots)
			cli := mtls.NewSource(tc.cert, m.roots(t))
			serr, _, cerr := pair(t, mtls.MutualConfig(srv, tc.auth), mtls.MutualConfig(cli, mtls.AuthorizeOneOf(gatewayID)))
			if serr == nil || cerr == nil {
				t.Fatalf("handshake with %s: server err %v, client err %v; want both to fail", tc.name, serr, cerr)
			}
			if !errors.Is(serr, mtls.ErrPeerRefused) || !strings.Contains(serr.Error(), tc.want) {
				t.Fatalf("server handshake error = %v; want ErrPeerRefused mentioning %q", serr, tc.want)
			}
		})
	}
}

func TestClientRefusesServer(t *testing.T) {
	m := newMeshCA(t)
	srv := mtls.NewSource(m.cert(t, workload), m.roots(t))
	cli := mtls.NewSource(m.cert(t, gatewayID), m.roots(t))
	_, _, cerr := pair(t, mtls.MutualConfig(srv, mtls.AuthorizeTrustDomain("cluster.local")), mtls.MutualConfig(cli, mtls.AuthorizeOneOf(gatewayID)))
	if !errors.Is(cerr, mtls.ErrPeerRefused) {
		t.Fatalf("dialling a server with a workload identity: err %v; want ErrPeerRefused", cerr)
	}
}

func TestEmptySourceRefuses(t *testing.T) {
	m := newMeshCA(t)
	srv := mtls.NewSource(nil, m.roots(t))
	cli := mtls.NewSource(m.cert(t, gatewayID), m.roots(t))
	serr, _, _ := pair(t, mtls.MutualConfig(srv, mtls.AuthorizeOneOf(gatewayID)), mtls.MutualConfig(cli, mtls.AuthorizeOneOf(gatewayID)))
	if !errors.Is(serr, mtls.ErrNoCertificate) {
		t.Fatalf("server without a certificate: err %v; want ErrNoCertificate", serr)
	}
}

// TestRotationKeepsConnections swaps both the certificate and the trust
// bundle to a new root: the connection made before keeps working, new
// handshakes use the new material, and a peer still on the old root is
// refused.
func TestRotationKeepsConnections(t *testing.T) {
	oldCA, newCA := newMeshCA(t), newMeshCA(t)
	auth := mtls.AuthorizeOneOf(gatewayID)
	srv := mtls.NewSource(oldCA.cert(t, gatewayID), oldCA.roots(t))
	cli := mtls.NewSource(oldCA.cert(t, gatewayID), oldCA.roots(t))
	srvCfg := mtls.MutualConfig(srv, auth)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			s, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer s.Close()
				r := bufio.NewReader(s)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					s.Write([]byte(line))
				}
			}()
		}
	}()
	echo := func(c net.Conn, msg string) error {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte(msg + "\n")); err != nil {
			return err
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return err
		}
		if line != msg+"\n" {
			return errors.New("echo mismatch: " + line)
		}
		return nil
	}
	dial := func(src *mtls.Source) (net.Conn, error) {
		d := &tls.Dialer{Config: mtls.MutualConfig(src, auth)}
		c, err := d.DialContext(t.Context(), "tcp", ln.Addr().String())
		if err != nil {
			return nil, err
		}
		if err := echo(c, "hello"); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	held, err := dial(cli)
	if err != nil {
		t.Fatalf("first connection: %v", err)
	}
	defer held.Close()

	gen := srv.Generation()
	srv.SetCertificate(newCA.cert(t, gatewayID))
	srv.SetRoots(newCA.roots(t))
	if srv.Generation() != gen+2 {
		t.Fatalf("Generation after two changes = %d; want %d", srv.Generation(), gen+2)
	}
	if err := echo(held, "still here"); err != nil {
		t.Fatalf("connection made before the rotation: %v; want it to keep working", err)
	}
	if c, err := dial(cli); err == nil {
		c.Close()
		t.Fatal("a peer on the old root connected after the rotation; want it refused")
	}
	cli.SetCertificate(newCA.cert(t, gatewayID))
	cli.SetRoots(newCA.roots(t))
	c, err := dial(cli)
	if err != nil {
		t.Fatalf("peer on the new root after the rotation: %v", err)
	}
	c.Close()
}

func TestVerifyPeerEdges(t *testing.T) {
	m := newMeshCA(t)
	leaf := m.cert(t, gatewayID).Leaf
	if _, err := mtls.VerifyPeer(nil, []*x509.Certificate{leaf}, mtls.AuthorizeOneOf(gatewayID)); !errors.Is(err, mtls.ErrPeerRefused) {
		t.Errorf("VerifyPeer(no roots) = %v; want ErrPeerRefused", err)
	}
	if _, err := mtls.VerifyPeer(m.roots(t), nil, mtls.AuthorizeOneOf(gatewayID)); !errors.Is(err, mtls.ErrPeerRefused) {
		t.Errorf("VerifyPeer(no chain) = %v; want ErrPeerRefused", err)
	}
	custom := errors.New("custom no")
	_, err := mtls.VerifyPeer(m.roots(t), []*x509.Certificate{leaf}, func(pki.Identity) error { return custom })
	if !errors.Is(err, custom) || !errors.Is(err, mtls.ErrPeerRefused) {
		t.Errorf("VerifyPeer(authorizer says no) = %v; want it to wrap both ErrPeerRefused and the authorizer's error", err)
	}
	id, err := mtls.VerifyPeer(m.roots(t), []*x509.Certificate{leaf}, mtls.AuthorizeTrustDomain("cluster.local"))
	if err != nil || id != gatewayID {
		t.Errorf("VerifyPeer(good) = %v, %v; want %v", id, err, gatewayID)
	}
}

// FuzzLeafIdentity feeds arbitrary URI SANs through certificate encoding
// and back: LeafIdentity must never panic and must accept only canonical
// Istio identities.
func FuzzLeafIdentity(f *testing.F) {
	for _, s := range []string{gatewayID.String(), "spiffe://cluster.local/gateway", "https://x/ns/a/sa/b",
		"spiffe://td/ns/a/sa/b/", "spiffe://TD/ns/a/sa/b", "spiffe://td/ns/a/sa/b?x", "spiffe://td/ns//sa/b", "spiffe://td:80/ns/a/sa/b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := url.Parse(s)
		if err != nil {
			return
		}
		id, err := mtls.LeafIdentity(&x509.Certificate{URIs: []*url.URL{u}})
		if err != nil {
			if !errors.Is(err, mtls.ErrPeerRefused) {
				t.Fatalf("LeafIdentity(%q) error %v does not wrap ErrPeerRefused", s, err)
			}
			return
		}
		if id.String() != u.String() {
			t.Fatalf("LeafIdentity(%q) = %v; accepted a non-canonical form", s, id)
		}
	})
}

func selfRoot(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "rogue root"},
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

// leafFrom makes a leaf under root with the given URI SANs, valid until
// now+life (negative = already expired).
func leafFrom(t *testing.T, root *x509.Certificate, rootKey *ecdsa.PrivateKey, uris []string, life time.Duration) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		NotBefore:    time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(life),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root, &key.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}
