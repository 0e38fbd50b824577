package catalog

import (
	"slices"
	"testing"
	"time"
)

func ep(addr string) Endpoint { return Endpoint{Service: "svc", Port: 80, Addr: addr} }

func put(owner string, inc, ctr uint64, id, addr string) *delta {
	return &delta{Owner: owner, Ver: version{inc, ctr}, ID: id, Ep: ep(addr)}
}

func del(owner string, inc, ctr uint64, id string) *delta {
	return &delta{Owner: owner, Ver: version{inc, ctr}, ID: id, Delete: true}
}

func full(owner string, inc, ctr uint64, eps map[string]string, digest ...digestRow) *state {
	s := &state{Owner: owner, Ver: version{inc, ctr}, Eps: map[string]Endpoint{}, Digest: digest}
	for id, addr := range eps {
		s.Eps[id] = ep(addr)
	}
	return s
}

// addrs lists the visible endpoint addresses of owner, sorted.
func addrs(v *view, owner string) []string {
	var out []string
	for _, e := range v.visibleOf(owner) {
		out = append(out, e.Addr)
	}
	slices.Sort(out)
	return out
}

func TestViewVersionRules(t *testing.T) {
	now := time.Unix(1000, 0)
	type step struct {
		delta *delta
		state *state
		leave *leaveIntent
		dead  string // owner declared not alive
		alive string // owner declared alive
	}
	for _, tc := range []struct {
		name  string
		steps []step
		want  []string // visible addrs of owner "o" afterwards
	}{
		{"put applies", []step{{delta: put("o", 1, 1, "a", "1.1.1.1:80")}}, []string{"1.1.1.1:80"}},
		{"older put after delete does not resurrect", []step{
			{delta: put("o", 1, 1, "a", "1.1.1.1:80")},
			{delta: del("o", 1, 2, "a")},
			{delta: put("o", 1, 1, "a", "1.1.1.1:80")},
		}, nil},
		{"reordered: delete before its put", []step{
			{delta: del("o", 1, 2, "a")},
			{delta: put("o", 1, 1, "a", "1.1.1.1:80")},
		}, nil},
		{"newer put wins", []step{
			{delta: put("o", 1, 1, "a", "1.1.1.1:80")},
			{delta: put("o", 1, 3, "a", "2.2.2.2:80")},
			{delta: put("o", 1, 2, "a", "3.3.3.3:80")},
		}, []string{"2.2.2.2:80"}},
		{"full state replaces and removes missing", []step{
			{delta: put("o", 1, 1, "a", "1.1.1.1:80")},
			{delta: put("o", 1, 2, "b", "2.2.2.2:80")},
			{state: full("o", 1, 5, map[string]string{"c": "3.3.3.3:80"})},
		}, []string{"3.3.3.3:80"}},
		{"stale full state cannot resurrect", []step{
			{state: full("o", 1, 5, map[string]string{"c": "3.3.3.3:80"})},
			{delta: del("o", 1, 6, "c")},
			{state: full("o", 1, 4, map[string]string{"c": "3.3.3.3:80", "d": "4.4.4.4:80"})},
		}, nil},
		{"full state keeps newer deltas", []step{
			{delta: put("o", 1, 7, "n", "7.7.7.7:80")},
			{delta: del("o", 1, 8, "c")},
			{state: full("o", 1, 6, map[string]string{"c": "3.3.3.3:80"})},
		}, []string{"7.7.7.7:80"}},
		{"delta at or below full state base is ignored", []step{
			{state: full("o", 1, 6, map[string]string{})},
			{delta: put("o", 1, 6, "x", "6.6.6.6:80")},
		}, nil},
		{"new incarnation discards old state", []step{
			{delta: put("o", 1, 9, "a", "1.1.1.1:80")},
			{delta: put("o", 2, 1, "b", "2.2.2.2:80")},
			{delta: put("o", 1, 10, "c", "3.3.3.3:80")},
		}, []string{"2.2.2.2:80"}},
		{"dead owner loses everything and ignores its deltas", []step{
			{delta: put("o", 1, 1, "a", "1.1.1.1:80")},
			{dead: "o"},
			{delta: put("o", 1, 2, "b", "2.2.2.2:80")},
		}, nil},
		{"rejoined owner is accepted again", []step{
			{dead: "o"},
			{alive: "o"},
			{delta: put("o", 1, 2, "b", "2.2.2.2:80")},
		}, []string{"2.2.2.2:80"}},
		{"leave intent withdraws and blocks its incarnation", []step{
			{delta: put("o", 3, 1, "a", "1.1.1.1:80")},
			{leave: &leaveIntent{Owner: "o", Ver: version{3, 2}}},
			{delta: put("o", 3, 5, "b", "2.2.2.2:80")},
			{state: full("o", 3, 9, map[string]string{"z": "9.9.9.9:80"})},
		}, nil},
		{"restart after leave is accepted", []step{
			{leave: &leaveIntent{Owner: "o", Ver: version{3, 2}}},
			{delta: put("o", 4, 1, "b", "2.2.2.2:80")},
		}, []string{"2.2.2.2:80"}},
		{"old leave intent does not hit a restarted owner", []step{
			{delta: put("o", 4, 1, "b", "2.2.2.2:80")},
			{leave: &leaveIntent{Owner: "o", Ver: version{3, 2}}},
		}, []string{"2.2.2.2:80"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newView("self")
			v.setAlive("o", true)
			for i, s := range tc.steps {
				switch {
				case s.delta != nil:
					v.applyDelta(s.delta, now)
				case s.state != nil:
					v.applyState(s.state, now)
				case s.leave != nil:
					v.applyLeave(s.leave)
				case s.dead != "":
					v.setAlive(s.dead, false)
				case s.alive != "":
					v.setAlive(s.alive, true)
				default:
					t.Fatalf("step %d is empty", i)
				}
			}
			if got := addrs(v, "o"); !slices.Equal(got, tc.want) {
				t.Fatalf("after %d steps visible endpoints of o = %v, want %v", len(tc.steps), got, tc.want)
			}
		})
	}
}

func TestViewIgnoresSelfAndUnknown(t *testing.T) {
	v := newView("self")
	v.setAlive("self", true)
	if news, _ := v.applyDelta(put("self", 1, 1, "a", "1.1.1.1:80"), time.Now()); news {
		t.Fatalf("applyDelta(own endpoint) reported news, want it ignored")
	}
	if news, _ := v.applyDelta(put("stranger", 1, 1, "a", "1.1.1.1:80"), time.Now()); news {
		t.Fatalf("applyDelta(from a node not alive) reported news, want it dropped")
	}
}

func TestViewGapAndDigest(t *testing.T) {
	v := newView("self")
	for _, n := range []string{"o", "p", "q"} {
		v.setAlive(n, true)
	}
	if _, gap := v.applyDelta(put("o", 1, 1, "a", "1.1.1.1:80"), time.Now()); gap {
		t.Fatalf("applyDelta(first counter) reported a gap, want none")
	}
	if _, gap := v.applyDelta(put("o", 1, 4, "b", "1.1.1.2:80"), time.Now()); !gap {
		t.Fatalf("applyDelta(counter 4 after 1) reported no gap, want a gap")
	}
	_, behind := v.applyState(full("p", 1, 1, nil,
		digestRow{"o", version{1, 9}},    // ahead of our 4: behind
		digestRow{"q", version{1, 1}},    // unknown to us: behind
		digestRow{"self", version{9, 9}}, // never about ourselves
		digestRow{"gone", version{1, 1}}, // not alive: ignored
	), time.Now())
	slices.Sort(behind)
	if want := []string{"o", "q"}; !slices.Equal(behind, want) {
		t.Fatalf("applyState digest behind = %v, want %v", behind, want)
	}
	if d := v.digest(); len(d) != 2 || d[0].Owner != "o" || d[0].Ver != (version{1, 4}) {
		t.Fatalf("digest() = %+v, want o@{1 4} and p", d)
	}
}

func TestViewSkipsOwnersThatNeverPublished(t *testing.T) {
	v := newView("self")
	v.setAlive("quiet", true)
	v.setAlive("busy", true)
	if changed, _ := v.applyState(full("quiet", 7, 0, nil), time.Now()); changed {
		t.Fatalf("applyState(quiet@{7 0}, no endpoints) changed = true, want false")
	}
	if _, ok := v.owners["quiet"]; ok {
		t.Fatalf("applyState(quiet@{7 0}, no endpoints) made an owner record, want none")
	}
	v.applyState(full("busy", 1, 2, map[string]string{"a": "1.1.1.1:80"}), time.Now())
	// A restart of an owner that had endpoints must still wipe them.
	if changed, _ := v.applyState(full("busy", 2, 0, nil), time.Now()); !changed {
		t.Fatalf("applyState(busy@{2 0} after busy@{1 2} with one endpoint) changed = false, want true")
	}
	if got := v.visibleOf("busy"); len(got) != 0 {
		t.Fatalf("visibleOf(busy) after a restart with no endpoints = %v, want none", got)
	}
	if d := v.digest(); len(d) != 1 || d[0].Owner != "busy" || d[0].Ver != (version{2, 0}) {
		t.Fatalf("digest() = %+v, want only busy@{2 0}", d)
	}
}

func TestViewTombstoneGC(t *testing.T) {
	v := newView("self")
	v.setAlive("o", true)
	t0 := time.Unix(1000, 0)
	v.applyDelta(del("o", 1, 3, "a"), t0)
	v.gc(t0.Add(time.Minute), 5*time.Minute)
	if v.owners["o"].eps["a"] == nil {
		t.Fatalf("gc before TTL removed a tombstone, want it kept")
	}
	v.gc(t0.Add(6*time.Minute), 5*time.Minute)
	if v.owners["o"].eps["a"] != nil {
		t.Fatalf("gc after TTL kept the tombstone, want it removed")
	}
}

func TestViewHolesCloseByDeltaOrFullState(t *testing.T) {
	now := time.Now()
	v := newView("self")
	v.setAlive("o", true)
	v.applyDelta(put("o", 1, 1, "a", "1.1.1.1:80"), now)
	if _, gap := v.applyDelta(put("o", 1, 3, "a", "3.3.3.3:80"), now); !gap {
		t.Fatalf("applyDelta(counter 3 after 1) reported no missed change, want one")
	}
	if got := v.lagging(); len(got) != 1 || got[0] != "o" {
		t.Fatalf("lagging() = %v, want [o]", got)
	}
	// Counter 2 arrives late and is superseded for its endpoint, yet it
	// fills the hole.
	if news, gap := v.applyDelta(put("o", 1, 2, "a", "2.2.2.2:80"), now); news || gap {
		t.Fatalf("applyDelta(superseded counter 2) = news %v, gap %v; want neither", news, gap)
	}
	if got := v.lagging(); len(got) != 0 {
		t.Fatalf("lagging() after the hole filled = %v, want none", got)
	}
	v.applyDelta(put("o", 1, 9, "b", "9.9.9.9:80"), now)
	if len(v.lagging()) != 1 {
		t.Fatalf("lagging() after counter 9 = %v, want [o]", v.lagging())
	}
	v.applyState(full("o", 1, 9, map[string]string{"a": "3.3.3.3:80", "b": "9.9.9.9:80"}), now)
	if got := v.lagging(); len(got) != 0 {
		t.Fatalf("lagging() after a full state = %v, want none", got)
	}
}
