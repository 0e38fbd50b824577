package catalog

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestProbe(t *testing.T) {
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer other.Close()
	var mu sync.Mutex // guards gotHost and gotPath
	var gotHost, gotPath string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		gotHost, gotPath = r.Host, r.URL.RequestURI()
		mu.Unlock()
		switch r.URL.Path {
		case "/ok":
			w.WriteHeader(http.StatusOK)
		case "/created":
			w.WriteHeader(http.StatusCreated)
		case "/redirect":
			http.Redirect(w, r, other.URL+"/ok", http.StatusFound)
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		case "/big":
			w.WriteHeader(http.StatusOK)
			w.Write([]byte(strings.Repeat("x", 1<<20)))
		default:
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedAddr := closed.Addr().String()
	closed.Close()

	for _, tc := range []struct {
		name, addr, path string
		ok               bool
		errHas           string
	}{
		{"tcp open", addr, "", true, ""},
		{"tcp closed", closedAddr, "", false, "refused"},
		{"http 200", addr, "/ok", true, ""},
		{"http 201", addr, "/created?x=1", true, ""},
		{"http 500", addr, "/fail", false, "status 500"},
		{"http redirect not followed", addr, "/redirect", false, "status 302"},
		{"http timeout", addr, "/slow", false, "deadline"},
		{"http big body", addr, "/big", true, ""},
		{"http closed port", closedAddr, "/ok", false, "refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
			defer cancel()
			err := probe(ctx, tc.addr, tc.path)
			if tc.ok != (err == nil) {
				t.Fatalf("probe(%s, %q) = %v, want ok=%v", tc.addr, tc.path, err, tc.ok)
			}
			if err != nil && !strings.Contains(err.Error(), tc.errHas) && !(tc.errHas == "deadline" && errors.Is(err, context.DeadlineExceeded)) {
				t.Fatalf("probe(%s, %q) = %v, want it to say %q", tc.addr, tc.path, err, tc.errHas)
			}
			mu.Lock()
			host, path := gotHost, gotPath
			mu.Unlock()
			if tc.ok && tc.path != "" && (host != addr || path != tc.path) {
				t.Fatalf("server saw Host %q path %q, want %q %q", host, path, addr, tc.path)
			}
		})
	}
}
