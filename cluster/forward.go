package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/raft"
)

// Writes reach the leader over a small HTTP/1.1 API served on the raft
// listener: a stream whose first byte is streamForward is handed to an
// http.Server instead of raft. It inherits the listener's mutual TLS, so
// only nodes holding a cluster certificate can call it, and needs no
// second port. HTTP was chosen over net/rpc for deadlines, connection
// reuse and context cancellation that come with net/http.
//
//	POST /v1/apply          body: encoded command; 200 {"index":N}
//	POST /v1/barrier        200 {"index":N}: the leader's applied index after a barrier
//	POST /v1/remove?id=ID   removes a raft server (used by Leave)
//	POST /v1/gossip         200 {"gossip":"host:port"}: this node's gossip address
//	                        (a restarted node rejoins gossip through its raft peers)
//
// Errors come back as {"code": "...", "error": "...", ...} with a code the
// client maps to this package's sentinels.
const (
	codeNotLeader  = "not_leader"
	codeNoLeader   = "no_leader"
	codeConflict   = "conflict"
	codeBadCommand = "bad_command"
	codeInternal   = "internal"
)

type fwdResponse struct {
	Index uint64 `json:"index,omitempty"`
	Code  string `json:"code,omitempty"`
	Error string `json:"error,omitempty"`
	Key   string `json:"key,omitempty"`
	Want  uint64 `json:"want,omitempty"`
	Have  uint64 `json:"have,omitempty"`
	// Gossip is the answer to /v1/gossip.
	Gossip string `json:"gossip,omitempty"`
}

// forwardHandler serves the leader side.
func (n *Node) forwardHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/apply", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxCommandLen+1))
		if err != nil {
			writeFwd(w, http.StatusRequestEntityTooLarge, fwdResponse{Code: codeBadCommand, Error: err.Error()})
			return
		}
		if _, err := decodeCommand(body); err != nil {
			writeFwd(w, http.StatusBadRequest, fwdResponse{Code: codeBadCommand, Error: err.Error()})
			return
		}
		idx, err := n.applyLocal(r.Context(), body)
		if err != nil {
			n.writeFwdError(w, err)
			return
		}
		n.m.forwardedIn.Inc()
		writeFwd(w, http.StatusOK, fwdResponse{Index: idx})
	})
	mux.HandleFunc("POST /v1/barrier", func(w http.ResponseWriter, r *http.Request) {
		if n.raft.State() != raft.Leader {
			n.writeFwdError(w, ErrNotLeader)
			return
		}
		if err := n.raft.Barrier(n.timeout(r.Context())).Error(); err != nil {
			n.writeFwdError(w, mapRaftErr(err))
			return
		}
		writeFwd(w, http.StatusOK, fwdResponse{Index: n.fsm.appliedIndex()})
	})
	mux.HandleFunc("POST /v1/gossip", func(w http.ResponseWriter, _ *http.Request) {
		writeFwd(w, http.StatusOK, fwdResponse{Gossip: n.cat.Addr()})
	})
	mux.HandleFunc("POST /v1/remove", func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("id")
		if id == "" {
			writeFwd(w, http.StatusBadRequest, fwdResponse{Code: codeBadCommand, Error: "missing id"})
			return
		}
		if err := n.removeServer(r.Context(), id); err != nil {
			n.writeFwdError(w, err)
			return
		}
		writeFwd(w, http.StatusOK, fwdResponse{})
	})
	return mux
}

func (n *Node) writeFwdError(w http.ResponseWriter, err error) {
	var ce *ConflictError
	switch {
	case errors.As(err, &ce):
		writeFwd(w, http.StatusConflict, fwdResponse{Code: codeConflict, Error: err.Error(), Key: ce.Key, Want: ce.Want, Have: ce.Have})
	case errors.Is(err, ErrNotLeader):
		writeFwd(w, http.StatusMisdirectedRequest, fwdResponse{Code: codeNotLeader, Error: err.Error()})
	case errors.Is(err, ErrNoLeader):
		writeFwd(w, http.StatusServiceUnavailable, fwdResponse{Code: codeNoLeader, Error: err.Error()})
	case errors.Is(err, ErrBadCommand), errors.Is(err, ErrTooLarge), errors.Is(err, ErrInvalidKey):
		writeFwd(w, http.StatusBadRequest, fwdResponse{Code: codeBadCommand, Error: err.Error()})
	default:
		writeFwd(w, http.StatusInternalServerError, fwdResponse{Code: codeInternal, Error: err.Error()})
	}
}

func writeFwd(w http.ResponseWriter, status int, r fwdResponse) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(r)
}

// forwardClient is the follower side: an http.Client whose connections are
// streamForward streams on the StreamNetwork.
type forwardClient struct {
	hc *http.Client
}

func newForwardClient(streams StreamNetwork) *forwardClient {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			c, err := dialStream(ctx, streams, addr, streamForward)
			if err != nil {
				// Nothing was sent: safe to retry elsewhere.
				return nil, errRetryable{err}
			}
			return c, nil
		},
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &forwardClient{hc: &http.Client{Transport: tr}}
}

func (f *forwardClient) close() { f.hc.CloseIdleConnections() }

// errRetryable marks a forwarding failure after which the write certainly
// did not happen (the leader refused it or was never reached), so it may
// be retried against a newer leader.
type errRetryable struct{ err error }

func (e errRetryable) Error() string { return e.err.Error() }
func (e errRetryable) Unwrap() error { return e.err }

// call POSTs body to path on the node at addr. replayable says the request
// may be sent twice without harm: net/http then retries it once on a fresh
// connection when a pooled one turns out to be dead (typically the old
// leader's, right after it failed). Batches with a Check are not
// replayable: a second delivery would report a conflict for a write that
// succeeded.
func (f *forwardClient) call(ctx context.Context, addr, path string, body []byte, replayable bool) (uint64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+path, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if replayable {
		req.Header["Idempotency-Key"] = nil // marks the request replayable without sending the header
	}
	resp, err := f.hc.Do(req)
	if err != nil {
		var re errRetryable
		if errors.As(err, &re) {
			return 0, re
		}
		return 0, err
	}
	defer resp.Body.Close()
	var r fwdResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&r); err != nil {
		return 0, fmt.Errorf("bad response (HTTP %d): %w", resp.StatusCode, err)
	}
	if resp.StatusCode == http.StatusOK {
		return r.Index, nil
	}
	switch r.Code {
	case codeConflict:
		return 0, &ConflictError{Key: r.Key, Want: r.Want, Have: r.Have}
	case codeNotLeader:
		return 0, errRetryable{ErrNotLeader}
	case codeNoLeader:
		return 0, errRetryable{ErrNoLeader}
	case codeBadCommand:
		return 0, fmt.Errorf("%w: %s", ErrBadCommand, r.Error)
	}
	return 0, fmt.Errorf("leader error (HTTP %d): %s", resp.StatusCode, r.Error)
}

// gossipAddr asks the node at raft address addr for its gossip address.
func (f *forwardClient) gossipAddr(ctx context.Context, addr string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/v1/gossip", nil)
	if err != nil {
		return "", err
	}
	resp, err := f.hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var r fwdResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&r); err != nil {
		return "", fmt.Errorf("bad response (HTTP %d): %w", resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("peer error (HTTP %d): %s", resp.StatusCode, r.Error)
	}
	if _, _, err := net.SplitHostPort(r.Gossip); err != nil {
		return "", fmt.Errorf("peer sent a bad gossip address %q: %w", r.Gossip, err)
	}
	return r.Gossip, nil
}
