package catalog

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// changesNode is a catalog alone on loopback whose view the test drives
// directly, as gossip would.
func changesNode(t *testing.T) *Catalog {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Name = "self"
	cfg.Network = "net-a"
	cfg.BindAddr = "127.0.0.1:0"
	cfg.MaintenanceInterval = time.Hour
	cfg.Unsigned = true
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// changesReader applies Changes the way a consumer does and keeps the
// entries it believes current, by service.
type changesReader struct {
	cursor uint64
	bySvc  map[string][]Entry
	alls   int
}

func (r *changesReader) read(c *Catalog) {
	ch := c.Changes(r.cursor)
	r.cursor = ch.Cursor
	if ch.All {
		r.alls++
		r.bySvc = map[string][]Entry{}
		for _, e := range c.Snapshot().Entries {
			r.bySvc[e.Service] = append(r.bySvc[e.Service], e)
		}
		return
	}
	if !slices.IsSorted(ch.Services) {
		panic(fmt.Sprintf("Changes().Services %v not sorted", ch.Services))
	}
	for _, s := range ch.Services {
		delete(r.bySvc, s)
	}
	for _, e := range ch.Entries {
		if _, ok := slices.BinarySearch(ch.Services, e.Service); !ok {
			panic(fmt.Sprintf("Changes() entry of %s, which is not among Services %v", e.Service, ch.Services))
		}
		r.bySvc[e.Service] = append(r.bySvc[e.Service], e)
	}
}

func (r *changesReader) entries() []Entry {
	var out []Entry
	for _, s := range slices.Sorted(func(yield func(string) bool) {
		for k := range r.bySvc {
			if !yield(k) {
				return
			}
		}
	}) {
		out = append(out, r.bySvc[s]...)
	}
	return out
}

func entriesEqual(a, b []Entry) bool {
	return slices.EqualFunc(a, b, func(x, y Entry) bool { return x.Owner == y.Owner && x.ID == y.ID && x.Endpoint.Equal(y.Endpoint) })
}

// TestChangesTrackSnapshot drives own registrations and peers' deltas,
// full states, leaves, failures and network moves at random, and checks
// after each step that a reader applying only Changes holds exactly the
// Snapshot's entries, and that Changes names only services that changed
// without falling back to All.
func TestChangesTrackSnapshot(t *testing.T) {
	c := changesNode(t)
	rng := rand.New(rand.NewPCG(7, 13))
	peers := []string{"p1", "p2", "p3"}
	inc := map[string]uint64{}
	ctr := map[string]uint64{}
	svc := func() string { return fmt.Sprintf("svc-%d.ns.svc", rng.IntN(12)) }
	epOf := func() Endpoint {
		return Endpoint{Service: svc(), Port: 80 + uint32(rng.IntN(2)), Addr: fmt.Sprintf("10.0.0.%d:%d", rng.IntN(8), 8000+rng.IntN(3)),
			Weight: uint32(rng.IntN(3)), Labels: map[string]string{"v": fmt.Sprint(rng.IntN(2))}}
	}
	join := func(p string) {
		inc[p]++
		ctr[p] = 0
		net := "net-a"
		if p == "p3" {
			net = "net-b"
		}
		meta, err := Meta{ProtocolVersion: ProtocolVersion, Network: net}.Encode()
		if err != nil {
			t.Fatalf("Meta.Encode() error = %v", err)
		}
		(*events)(c).NotifyJoin(&memberlist.Node{Name: p, Meta: meta})
	}
	for _, p := range peers {
		join(p)
	}
	var r changesReader
	r.read(c)
	check := func(step int, what string) {
		t.Helper()
		before := r.alls
		r.read(c)
		if got, want := r.entries(), c.Snapshot().Entries; !entriesEqual(got, want) {
			t.Fatalf("step %d (%s): entries from Changes = %v, Snapshot = %v", step, what, got, want)
		}
		if r.alls != before {
			t.Fatalf("step %d (%s): Changes answered All; want the changed services", step, what)
		}
	}
	now := time.Unix(1000, 0)
	for step := range 400 {
		p := peers[rng.IntN(len(peers))]
		var what string
		switch k := rng.IntN(10); {
		case k < 3:
			what = "register"
			id := fmt.Sprintf("r%d", rng.IntN(10))
			if err := c.Register(Registration{ID: id, Endpoint: epOf()}); err != nil {
				t.Fatalf("Register() error = %v", err)
			}
		case k == 3:
			what = "deregister"
			_ = c.Deregister(fmt.Sprintf("r%d", rng.IntN(10)))
		case k < 6:
			what = "delta " + p
			ctr[p]++
			d := &delta{Owner: p, Ver: version{inc[p], ctr[p]}, ID: fmt.Sprintf("e%d", rng.IntN(8))}
			if rng.IntN(4) == 0 {
				d.Delete = true
			} else {
				d.Ep = epOf()
				if rng.IntN(3) == 0 {
					d.Ep.Network = ""
				}
			}
			c.mu.Lock()
			if news, _ := c.view.applyDelta(d, now); news {
				c.endpointsChangedLocked()
			}
			c.mu.Unlock()
		case k == 6:
			what = "full state " + p
			ctr[p]++
			s := &state{Owner: p, Ver: version{inc[p], ctr[p]}, Eps: map[string]Endpoint{}}
			for range rng.IntN(5) {
				s.Eps[fmt.Sprintf("e%d", rng.IntN(8))] = epOf()
			}
			c.mu.Lock()
			c.mergeStateLocked(s, nil, now)
			c.mu.Unlock()
		case k == 7:
			what = "failed " + p
			(*events)(c).NotifyLeave(&memberlist.Node{Name: p, State: memberlist.StateDead})
			join(p)
		case k == 8:
			what = "leave intent " + p
			c.mu.Lock()
			if c.view.applyLeave(&leaveIntent{Owner: p, Ver: version{inc[p], ctr[p] + 1}}) {
				c.endpointsChangedLocked()
			}
			c.mu.Unlock()
			join(p)
		default:
			what = "network move " + p
			meta, err := Meta{ProtocolVersion: ProtocolVersion, Network: fmt.Sprintf("net-%d", rng.IntN(3))}.Encode()
			if err != nil {
				t.Fatalf("Meta.Encode() error = %v", err)
			}
			(*events)(c).NotifyUpdate(&memberlist.Node{Name: p, Meta: meta})
		}
		check(step, what)
	}
	if len(c.Snapshot().Entries) == 0 {
		t.Fatal("the walk ended with an empty catalog; it tested nothing")
	}
}

// TestChangesAll checks the answers that make a reader re-read
// everything: cursor 0, a cursor from the future, and this node's
// listeners changing.
func TestChangesAll(t *testing.T) {
	c := changesNode(t)
	if ch := c.Changes(0); !ch.All {
		t.Fatalf("Changes(0) = %+v; want All", ch)
	}
	cur := c.Changes(0).Cursor
	if err := c.Register(Registration{ID: "a", Endpoint: tep("10.0.0.1:80")}); err != nil {
		t.Fatalf("Register() error = %v", err)
	}
	ch := c.Changes(cur)
	if ch.All || !slices.Equal(ch.Services, []string{tep("").Service}) || len(ch.Entries) != 1 {
		t.Fatalf("Changes(%d) after one Register = %+v; want that one service and entry", cur, ch)
	}
	if again := c.Changes(ch.Cursor); again.All || len(again.Services) != 0 {
		t.Fatalf("Changes(%d) with nothing new = %+v; want no services", ch.Cursor, again)
	}
	if fut := c.Changes(ch.Cursor + 100); !fut.All {
		t.Fatalf("Changes(cursor from the future) = %+v; want All", fut)
	}
	var l changeLog = newChangeLog()
	cur = l.seq
	for i := range maxChangeLog + 1 {
		l.note(fmt.Sprint(i))
	}
	if _, all := l.since(cur); !all {
		t.Fatalf("changeLog.since(%d) after %d distinct changes = not All; want All (the log is bounded)", cur, maxChangeLog+1)
	}
	if len(l.recs) > maxChangeLog {
		t.Fatalf("change log holds %d records; bound %d", len(l.recs), maxChangeLog)
	}
}

// TestChangesReservedListener checks that this node's listeners changing
// makes readers re-read everything (the filter moved), and that setting
// the same addresses again does not.
func TestChangesReservedListener(t *testing.T) {
	var ls Listeners
	cfg := DefaultConfig()
	cfg.Name = "self"
	cfg.Network = "net-a"
	cfg.BindAddr = "127.0.0.1:0"
	cfg.Reserved = &ls
	cfg.MaintenanceInterval = time.Hour
	cfg.Unsigned = true
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	t.Cleanup(func() { c.Close() })
	ls.Set("proxy", "127.0.0.1:15443")
	cur := c.Changes(0).Cursor
	ls.Set("proxy", "127.0.0.1:15443")
	if ch := c.Changes(cur); ch.All {
		t.Fatalf("Changes() after setting the same listener again = All; want no change")
	}
	ls.Set("proxy", "127.0.0.1:15444")
	if ch := c.Changes(cur); !ch.All {
		t.Fatalf("Changes() after a listener moved = %+v; want All", ch)
	}
}
