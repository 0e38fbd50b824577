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
	state := filepath.Join(t.TempDir(), "catalog", "registrations")
	mk := func() *catalog.Catalog {
		cfg := fastConfig(t, "owner", "net-a")
		cfg.StateDir = state
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
	// Written before Register returned: a crash right now loses nothing.
	fi, err := os.Stat(filepath.Join(state, catalog.StateFileName("keep")))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("registration file of keep = %v, %v; want it written with mode 0600", fi, err)
	}
	owner.Close()
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
	ok := `{"version": 1, "registration": {"id": "a/b", "service": "reviews.default.svc.cluster.local", "port": 9080, "addr": "10.0.0.1:9080"}}`
	if r, err := catalog.DecodeStateFile([]byte(ok)); err != nil || r.ID != "a/b" {
		t.Fatalf("DecodeStateFile(valid) = %+v, %v; want registration a/b", r, err)
	}
	for _, tc := range []struct {
		name, body string
	}{
		{"empty", ""},
		{"not json", "registration: {}"},
		{"wrong version", `{"version": 2, "registration": {"id": "a", "service": "reviews.default.svc.cluster.local", "port": 9080, "addr": "10.0.0.1:9080"}}`},
		{"unknown field", `{"version": 1, "registration": {"id": "a", "service": "reviews.default.svc.cluster.local", "port": 9080, "addr": "10.0.0.1:9080"}, "extra": 1}`},
		{"trailing data", ok + ` {}`},
		{"invalid registration", `{"version": 1, "registration": {"id": "", "service": "x", "port": 1, "addr": "10.0.0.1:1"}}`},
		{"port out of range", `{"version": 1, "registration": {"id": "a", "service": "reviews.default.svc.cluster.local", "port": 70000, "addr": "10.0.0.1:9080"}}`},
		{"negative ttl", `{"version": 1, "registration": {"id": "a", "service": "reviews.default.svc.cluster.local", "port": 9080, "addr": "10.0.0.1:9080", "ttl": -1}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := catalog.DecodeStateFile([]byte(tc.body))
			if !errors.Is(err, catalog.ErrStateFile) {
				t.Fatalf("DecodeStateFile(%q) error = %v; want ErrStateFile", tc.body, err)
			}
		})
	}
	// Bad files are moved aside, not lost, and the node starts with the
	// good ones.
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(catalog.StateFileName("broken"), "{broken")
	write(catalog.StateFileName("elsewhere"), ok) // holds a/b under another name
	write(catalog.StateFileName("a/b"), ok)
	net := start(t, 1, nil).net
	cfg := fastConfig(t, "owner", "net-a")
	cfg.StateDir = dir
	cfg.Transport = net.NewTransport("owner")
	c, err := catalog.New(cfg)
	if err != nil {
		t.Fatalf("catalog.New with bad registration files error = %v; want a start without them", err)
	}
	defer c.Close()
	if rs := c.Registrations(); len(rs) != 1 || rs[0].ID != "a/b" {
		t.Fatalf("Registrations() = %+v; want only a/b", rs)
	}
	for _, id := range []string{"broken", "elsewhere"} {
		if _, err := os.Stat(filepath.Join(dir, catalog.StateFileName(id)+".bad")); err != nil {
			t.Errorf("bad file of %s not moved aside: %v", id, err)
		}
	}
	if err := c.Deregister("a/b"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, catalog.StateFileName("a/b"))); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("file of a deregistered endpoint: stat = %v; want it removed", err)
	}
}

func FuzzDecodeStateFile(f *testing.F) {
	f.Add([]byte(`{"version": 1, "registration": {"id": "a", "service": "reviews.default.svc.cluster.local", "port": 9080, "addr": "10.0.0.1:9080", "labels": {"version": "v1"}}, "expires": "2030-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"version": 1, "registration": {}}`))
	f.Add([]byte(`{"version": 1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := catalog.DecodeStateFile(b)
		if err != nil {
			if !errors.Is(err, catalog.ErrStateFile) {
				t.Fatalf("DecodeStateFile error %v does not wrap ErrStateFile", err)
			}
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("DecodeStateFile accepted an invalid registration %+v: %v", r, err)
		}
	})
}
