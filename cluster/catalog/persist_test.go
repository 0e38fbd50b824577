package catalog_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshgate/meshgate/cluster/catalog"
)

// Registrations survive a restart of their owner: the same IDs come back,
// leases keep their remaining time, expired leases do not come back.
func TestRegistrationsSurviveRestart(t *testing.T) {
	tc := start(t, 2, nil)
	state := filepath.Join(t.TempDir(), "catalog", "registrations.json")
	mk := func() *catalog.Catalog {
		cfg := fastConfig(t, "owner", "net-a")
		cfg.StateFile = state
		cfg.Transport = tc.net.NewTransport("owner")
		c, err := catalog.New(cfg)
		if err != nil {
			t.Fatalf("catalog.New(owner) error = %v", err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	owner := mk()
	if _, err := owner.Join(t.Context(), []string{tc.trs[0].Addr()}); err != nil {
		t.Fatal(err)
	}
	keep := reg("keep", "10.7.0.1:9080")
	lease := reg("lease", "10.7.0.2:9080")
	lease.TTL = time.Hour
	short := reg("short", "10.7.0.3:9080")
	short.TTL = 300 * time.Millisecond
	for _, r := range []catalog.Registration{keep, lease, short} {
		if err := owner.Register(r); err != nil {
			t.Fatalf("Register(%s) error = %v", r.ID, err)
		}
	}
	owner.Close() // a crash after the last write, or a clean stop: Close flushes
	fi, err := os.Stat(state)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("registrations file = %v, %v; want it written with mode 0600", fi, err)
	}
	// The short lease runs out while the owner is down.
	end := time.Now().Add(short.TTL)
	waitFor(t, "the short lease's end while the owner is down", func() bool { return time.Now().After(end) })

	again := mk()
	var ids []string
	for _, rs := range again.Registrations() {
		ids = append(ids, rs.ID)
		if rs.ID == "lease" && (rs.Expires.IsZero() || time.Until(rs.Expires) > time.Hour) {
			t.Errorf("restored lease expires %v; want within the hour it was given", rs.Expires)
		}
	}
	if strings.Join(ids, ",") != "keep,lease" {
		t.Fatalf("Registrations() after restart = %v; want [keep lease] (short expired while down)", ids)
	}
	if _, err := again.Join(t.Context(), []string{tc.trs[0].Addr()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "peers hold the restored endpoints", func() bool {
		return len(tc.nodes[1].Snapshot().Lookup("reviews.default.svc.cluster.local", 9080)) == 2
	})
}

func TestRegistrationsFileHostile(t *testing.T) {
	for _, tc := range []struct {
		name, body string
	}{
		{"empty", ""},
		{"not json", "registrations: []"},
		{"wrong version", `{"version": 2, "registrations": []}`},
		{"unknown field", `{"version": 1, "registrations": [], "extra": 1}`},
		{"trailing data", `{"version": 1, "registrations": []} {}`},
		{"invalid registration", `{"version": 1, "registrations": [{"registration": {"id": "", "service": "x", "port": 1, "addr": "10.0.0.1:1"}}]}`},
		{"duplicate id", `{"version": 1, "registrations": [{"registration": {"id": "a", "service": "reviews.default.svc.cluster.local", "port": 9080, "addr": "10.0.0.1:9080"}}, {"registration": {"id": "a", "service": "reviews.default.svc.cluster.local", "port": 9080, "addr": "10.0.0.2:9080"}}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := catalog.DecodeStateFile([]byte(tc.body))
			if !errors.Is(err, catalog.ErrStateFile) {
				t.Fatalf("DecodeStateFile(%q) error = %v; want ErrStateFile", tc.body, err)
			}
		})
	}
	// A bad file is moved aside, not lost, and the node starts.
	dir := t.TempDir()
	state := filepath.Join(dir, "registrations.json")
	if err := os.WriteFile(state, []byte("{broken"), 0o600); err != nil {
		t.Fatal(err)
	}
	net := start(t, 1, nil).net
	cfg := fastConfig(t, "owner", "net-a")
	cfg.StateFile = state
	cfg.Transport = net.NewTransport("owner")
	c, err := catalog.New(cfg)
	if err != nil {
		t.Fatalf("catalog.New with a corrupt registrations file error = %v; want a start without it", err)
	}
	defer c.Close()
	if b, err := os.ReadFile(state + ".bad"); err != nil || string(b) != "{broken" {
		t.Fatalf("moved-aside file = %q, %v; want the corrupt bytes kept", b, err)
	}
}

func FuzzDecodeStateFile(f *testing.F) {
	f.Add([]byte(`{"version": 1, "registrations": [{"registration": {"id": "a", "service": "reviews.default.svc.cluster.local", "port": 9080, "addr": "10.0.0.1:9080", "labels": {"version": "v1"}}, "expires": "2030-01-01T00:00:00Z"}]}`))
	f.Add([]byte(`{"version": 1, "registrations": []}`))
	f.Add([]byte(`{"version": 1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, err := catalog.DecodeStateFile(b)
		if err != nil {
			if !errors.Is(err, catalog.ErrStateFile) {
				t.Fatalf("DecodeStateFile error %v does not wrap ErrStateFile", err)
			}
			return
		}
		for _, e := range entries {
			if err := e.Validate(); err != nil {
				t.Fatalf("DecodeStateFile accepted an invalid registration %+v: %v", e, err)
			}
		}
	})
}
