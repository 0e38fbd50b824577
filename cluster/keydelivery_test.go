package cluster_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshgate/meshgate/cluster"
	"github.com/meshgate/meshgate/mtls"
	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/pkitest"
)

var (
	gatewayID  = pki.Identity{TrustDomain: "cluster.local", Namespace: "meshgate-system", ServiceAccount: "meshgate"}
	workloadID = pki.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "web"}
	key32      = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x42}, 32))
	key16      = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x17}, 16))
)

func nodeCert(t *testing.T, ca *pki.CA, id pki.Identity) *tls.Certificate {
	t.Helper()
	c, err := ca.NodeCertificate(t.Context(), pki.NodeRequest{Identity: id})
	if err != nil {
		t.Fatalf("NodeCertificate(%s) = %v", id, err)
	}
	return c
}

func rootsOf(ca *pki.CA) *x509.CertPool {
	pool := x509.NewCertPool()
	for _, r := range ca.Info().Roots {
		pool.AddCert(r)
	}
	return pool
}

// keyringServer serves NewKeyringHandler over real TLS that asks for, but
// does not verify, client certificates, as the certificate API does.
func keyringServer(t *testing.T, ca *pki.CA, keys []string, reg prometheus.Registerer) (*httptest.Server, *x509.CertPool) {
	t.Helper()
	h, err := cluster.NewKeyringHandler(cluster.KeyringHandlerConfig{
		Keys:       func() []string { return keys },
		Roots:      func() *x509.CertPool { return rootsOf(ca) },
		Authorizer: mtls.AuthorizeOneOf(gatewayID),
		Logger:     pkitest.Logger(t),
		Registerer: reg,
	})
	if err != nil {
		t.Fatalf("NewKeyringHandler = %v", err)
	}
	mux := http.NewServeMux()
	mux.Handle(cluster.KeyringPath, h)
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return srv, pool
}

// TestKeyringDeliveryOnlyToFleetNodes asks for the keyring as a fleet node,
// as a workload of the same mesh, as a node of another PKI and with no
// certificate (a bare token cannot even be presented): only the fleet node
// gets the keys, every refusal is counted by reason.
func TestKeyringDeliveryOnlyToFleetNodes(t *testing.T) {
	ca, _ := pkitest.NewCA(t, pkitest.Config(t))
	other, _ := pkitest.NewCA(t, pkitest.Config(t))
	reg := prometheus.NewRegistry()
	srv, serverRoots := keyringServer(t, ca, []string{key32, key16}, reg)
	addr := strings.TrimPrefix(srv.URL, "https://")

	keys, err := cluster.FetchKeyring(t.Context(), cluster.FetchKeyringConfig{Addr: addr, RootCAs: serverRoots, Certificate: nodeCert(t, ca, gatewayID)})
	if err != nil {
		t.Fatalf("FetchKeyring as %s = %v; want the keys", gatewayID, err)
	}
	if len(keys) != 2 || base64.StdEncoding.EncodeToString(keys[0]) != key32 || base64.StdEncoding.EncodeToString(keys[1]) != key16 {
		t.Fatalf("FetchKeyring as the fleet node = %d keys %q; want [%s %s] in order", len(keys), keys, key32, key16)
	}
	for _, tc := range []struct {
		name string
		cert *tls.Certificate
	}{
		{"workload of the same mesh", nodeCert(t, ca, workloadID)},
		{"gateway identity from another PKI", nodeCert(t, other, gatewayID)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys, err := cluster.FetchKeyring(t.Context(), cluster.FetchKeyringConfig{Addr: addr, RootCAs: serverRoots, Certificate: tc.cert})
			if !errors.Is(err, cluster.ErrKeyringRefused) || keys != nil {
				t.Fatalf("FetchKeyring = %q, %v; want no keys and ErrKeyringRefused", keys, err)
			}
		})
	}
	// Without a client certificate, with a join token as bearer.
	req, _ := http.NewRequest(http.MethodGet, srv.URL+cluster.KeyringPath, nil)
	req.Header.Set("Authorization", "Bearer some-join-token")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	body.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || strings.Contains(body.String(), key32) {
		t.Fatalf("GET %s with a token and no certificate = %s %q; want 401 without keys", cluster.KeyringPath, resp.Status, body.String())
	}
	resp, err = srv.Client().Post(srv.URL+cluster.KeyringPath, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST %s = %s; want 405", cluster.KeyringPath, resp.Status)
	}

	want := map[string]float64{"granted": 1, "not_allowed": 2, "no_client_cert": 1}
	for result, n := range want {
		got := counterValue(t, reg, "meshgate_cluster_keyring_requests_total", result)
		if got != n {
			t.Errorf("meshgate_cluster_keyring_requests_total{result=%q} = %v; want %v", result, got, n)
		}
	}
}

// counterValue reads the registered counter vector's child for label value.
func counterValue(t *testing.T, reg *prometheus.Registry, name, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("%s{%q} not registered", name, value)
	return 0
}

// TestFetchKeyringFleetWithoutEncryption: a fleet node that runs without
// a key answers an empty list, which FetchKeyring returns as no keys.
func TestFetchKeyringFleetWithoutEncryption(t *testing.T) {
	ca, _ := pkitest.NewCA(t, pkitest.Config(t))
	srv, serverRoots := keyringServer(t, ca, nil, nil)
	keys, err := cluster.FetchKeyring(t.Context(), cluster.FetchKeyringConfig{Addr: strings.TrimPrefix(srv.URL, "https://"), RootCAs: serverRoots, Certificate: nodeCert(t, ca, gatewayID)})
	if err != nil || len(keys) != 0 {
		t.Fatalf("FetchKeyring from a node without keys = %q, %v; want no keys, no error", keys, err)
	}
}

var decodeKeyringRows = []struct {
	name string
	in   string
	want int    // keys; -1 = error
	err  string // substring of the error
}{
	{"two keys", `{"keys":["` + key32 + `","` + key16 + `"]}`, 2, ""},
	{"no keys: unencrypted fleet", `{"keys":[]}`, 0, ""},
	{"empty input", ``, -1, "EOF"},
	{"truncated", `{"keys":["` + key32[:10], -1, "unexpected EOF"},
	{"null keys", `{"keys":null}`, -1, `no "keys"`},
	{"missing keys", `{}`, -1, `no "keys"`},
	{"unknown field", `{"keys":[],"primary":"x"}`, -1, "unknown field"},
	{"not an object", `["` + key32 + `"]`, -1, "cannot unmarshal"},
	{"keys not strings", `{"keys":[1,2]}`, -1, "cannot unmarshal"},
	{"trailing object", `{"keys":[]}{"keys":["` + key32 + `"]}`, -1, "data after"},
	{"trailing garbage", `{"keys":[]} x`, -1, "data after"},
	{"not base64", `{"keys":["not a key!"]}`, -1, "keys[0]"},
	{"url alphabet", `{"keys":["` + strings.NewReplacer("+", "-", "/", "_").Replace(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 32))) + `"]}`, -1, "keys[0]"},
	{"20-byte key", `{"keys":["` + base64.StdEncoding.EncodeToString(make([]byte, 20)) + `"]}`, -1, "20 bytes"},
	{"empty key", `{"keys":[""]}`, -1, "0 bytes"},
	{"repeated key", `{"keys":["` + key32 + `","` + key32 + `"]}`, -1, "keys[1] repeats"},
	{"too many keys", `{"keys":[` + strings.Repeat(`"`+key16+`",`, 16) + `"` + key32 + `"]}`, -1, "17 keys"},
	{"oversized body", `{"keys":[],"pad":"` + strings.Repeat("a", 5000) + `"}`, -1, "limit 4096"},
	{"deep nesting", strings.Repeat("[", 3000), -1, "unexpected EOF"},
	{"wrong type at top", `"keys"`, -1, "cannot unmarshal"},
}

func TestDecodeKeyringHostile(t *testing.T) {
	for _, tc := range decodeKeyringRows {
		t.Run(tc.name, func(t *testing.T) {
			keys, err := cluster.DecodeKeyring([]byte(tc.in))
			if tc.want < 0 {
				if !errors.Is(err, cluster.ErrKeyringResponse) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("DecodeKeyring(%.60q) = %d keys, %v; want ErrKeyringResponse naming %q", tc.in, len(keys), err, tc.err)
				}
				return
			}
			if err != nil || len(keys) != tc.want {
				t.Fatalf("DecodeKeyring(%.60q) = %d keys, %v; want %d keys", tc.in, len(keys), err, tc.want)
			}
		})
	}
}

func FuzzDecodeKeyring(f *testing.F) {
	for _, tc := range decodeKeyringRows {
		f.Add([]byte(tc.in))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := cluster.DecodeKeyring(b)
		if err != nil {
			if !errors.Is(err, cluster.ErrKeyringResponse) {
				t.Fatalf("DecodeKeyring error %v does not wrap ErrKeyringResponse", err)
			}
			return
		}
		if len(b) > 4<<10 || len(keys) > 16 {
			t.Fatalf("DecodeKeyring accepted %d bytes with %d keys", len(b), len(keys))
		}
		for i, k := range keys {
			if n := len(k); n != 16 && n != 24 && n != 32 {
				t.Fatalf("DecodeKeyring accepted a %d-byte key", n)
			}
			if slices.ContainsFunc(keys[:i], func(o []byte) bool { return bytes.Equal(o, k) }) {
				t.Fatalf("DecodeKeyring accepted a repeated key")
			}
		}
	})
}
