package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshgate/meshgate/cluster/catalog"
	"github.com/meshgate/meshgate/mtls"

	"github.com/meshgate/meshgate/internal/promreg"
)

// KeyringPath is where a node serves the gossip keyring to fleet nodes,
// on its certificate API port (the one tls.ca_addr names), so a node that
// joins with a token gets the key right after enrolling, before its first
// gossip join.
const KeyringPath = "/v1/gossip/keyring"

// Limits of a keyring response.
const (
	maxKeyringBody = 4 << 10
	maxKeyringKeys = 16
)

// Errors of keyring delivery.
var (
	// ErrKeyringRefused: the serving node refused to hand out the keyring
	// (no client certificate, or not a fleet node identity).
	ErrKeyringRefused = errors.New("cluster: gossip keyring refused")
	// ErrKeyringResponse: a keyring response is malformed.
	ErrKeyringResponse = errors.New("cluster: malformed gossip keyring response")
)

// KeyringResponse is the body of GET KeyringPath: the gossip keys the
// serving node runs with (standard base64, the primary first). No keys
// means the fleet's gossip is not encrypted.
type KeyringResponse struct {
	Keys []string `json:"keys"`
}

// DecodeKeyring parses a keyring response: a JSON object with only a
// "keys" list of at most 16 distinct standard-base64 keys of 16, 24 or 32
// bytes, in at most 4 KiB. It returns the keys, the primary first (none:
// the fleet does not encrypt gossip). The error says what was wrong.
func DecodeKeyring(b []byte) ([][]byte, error) {
	if len(b) > maxKeyringBody {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrKeyringResponse, len(b), maxKeyringBody)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var r struct {
		Keys *[]string `json:"keys"`
	}
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyringResponse, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the JSON object", ErrKeyringResponse)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the JSON object", ErrKeyringResponse)
	}
	if r.Keys == nil {
		return nil, fmt.Errorf("%w: no \"keys\" field", ErrKeyringResponse)
	}
	if len(*r.Keys) > maxKeyringKeys {
		return nil, fmt.Errorf("%w: %d keys, limit %d", ErrKeyringResponse, len(*r.Keys), maxKeyringKeys)
	}
	keys := make([][]byte, 0, len(*r.Keys))
	for i, s := range *r.Keys {
		k, err := catalog.ParseKey(s)
		if err != nil {
			return nil, fmt.Errorf("%w: keys[%d]: %w", ErrKeyringResponse, i, err)
		}
		if slices.ContainsFunc(keys, func(o []byte) bool { return bytes.Equal(o, k) }) {
			return nil, fmt.Errorf("%w: keys[%d] repeats an earlier key", ErrKeyringResponse, i)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// KeyringHandlerConfig says whom a node hands its gossip keyring to.
type KeyringHandlerConfig struct {
	// Keys returns the keys to hand out (base64, the primary first; none
	// when gossip is not encrypted). Required; must be safe for
	// concurrent use.
	Keys func() []string
	// Roots returns the mesh roots a client certificate must chain to.
	// Required.
	Roots func() *x509.CertPool
	// Authorizer admits the fleet node identities (tls.peer_identities).
	// Required.
	Authorizer mtls.Authorizer
	// Logger receives refusals. nil discards.
	Logger *slog.Logger
	// Registerer receives meshgate_cluster_keyring_requests_total. nil
	// does not register.
	Registerer prometheus.Registerer
}

// Refusal reasons of meshgate_cluster_keyring_requests_total.
const (
	keyringGranted    = "granted"
	keyringNoCert     = "no_client_cert"
	keyringNotAllowed = "not_allowed"
)

// NewKeyringHandler serves GET KeyringPath on a TLS listener that asks for
// client certificates without verifying them (the certificate API): the
// keyring goes only to a client whose certificate chains to Roots and
// carries an identity Authorizer admits. Everything else is refused (401
// without a certificate, 403 otherwise) and counted by reason.
func NewKeyringHandler(cfg KeyringHandlerConfig) (http.Handler, error) {
	if cfg.Keys == nil || cfg.Roots == nil || cfg.Authorizer == nil {
		return nil, errors.New("cluster: keyring handler needs Keys, Roots and Authorizer")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshgate_cluster_keyring_requests_total",
		Help: "Gossip keyring requests on the certificate API, by result (granted, or the refusal reason).",
	}, []string{"result"})
	if cfg.Registerer != nil {
		reqs = promreg.MustRegister(cfg.Registerer, reqs)
	}
	for _, r := range []string{keyringGranted, keyringNoCert, keyringNotAllowed} {
		reqs.WithLabelValues(r)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			reqs.WithLabelValues(keyringNoCert).Inc()
			writeKeyringError(w, http.StatusUnauthorized, "a fleet node certificate is required")
			return
		}
		id, err := mtls.VerifyPeer(cfg.Roots(), r.TLS.PeerCertificates, cfg.Authorizer)
		if err != nil {
			reqs.WithLabelValues(keyringNotAllowed).Inc()
			log.Warn("gossip keyring refused", "remote", r.RemoteAddr, "err", err)
			writeKeyringError(w, http.StatusForbidden, err.Error())
			return
		}
		keys := cfg.Keys()
		if keys == nil {
			keys = []string{}
		}
		reqs.WithLabelValues(keyringGranted).Inc()
		log.Info("gossip keyring handed out", "remote", r.RemoteAddr, "peer_id", id.String())
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(KeyringResponse{Keys: keys})
	}), nil
}

func writeKeyringError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// FetchKeyringConfig says where and as whom to ask for the keyring.
type FetchKeyringConfig struct {
	// Addr is the certificate API (host:port) of a fleet node.
	Addr string
	// RootCAs are the mesh roots the server must chain to.
	RootCAs *x509.CertPool
	// Certificate is this node's own certificate, presented as the client
	// certificate.
	Certificate *tls.Certificate
	// Timeout bounds one request when ctx has no deadline. Default 10s.
	Timeout time.Duration
}

// FetchKeyring asks the node at cfg.Addr for the fleet's gossip keyring
// over mutual TLS. No keys (and no error) means the fleet does not
// encrypt gossip. A refusal is ErrKeyringRefused; a bad answer is
// ErrKeyringResponse.
func FetchKeyring(ctx context.Context, cfg FetchKeyringConfig) ([][]byte, error) {
	if cfg.Addr == "" || cfg.RootCAs == nil || cfg.Certificate == nil {
		return nil, errors.New("cluster: fetch keyring needs Addr, RootCAs and Certificate")
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	cert := cfg.Certificate
	hc := &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{
				MinVersion: tls.VersionTLS12,
				RootCAs:    cfg.RootCAs,
				GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
					return cert, nil
				},
			},
			ForceAttemptHTTP2: false,
		},
	}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+cfg.Addr+KeyringPath, nil)
	if err != nil {
		return nil, fmt.Errorf("cluster: fetch keyring: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cluster: fetch keyring from %s: %w", cfg.Addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxKeyringBody+1))
	if err != nil {
		return nil, fmt.Errorf("cluster: fetch keyring from %s: %w", cfg.Addr, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusUnauthorized, http.StatusForbidden:
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		return nil, fmt.Errorf("%w by %s: %s: %.200s", ErrKeyringRefused, cfg.Addr, resp.Status, e.Error)
	default:
		return nil, fmt.Errorf("%w: %s answered %s", ErrKeyringResponse, cfg.Addr, resp.Status)
	}
	return DecodeKeyring(body)
}
