package catalog

import (
	"maps"
	"time"
)

// view is one node's picture of the endpoints owned by other nodes, with
// the version rules that keep stale gossip from resurrecting withdrawn
// endpoints:
//
//   - every owner change carries (incarnation, counter); a restart raises
//     the incarnation, and a higher incarnation discards everything older;
//   - a delta is applied only if its counter is above both the last full
//     state's counter (base) and the endpoint's own counter; a delete leaves
//     a tombstone with its counter;
//   - a full state replaces the owner's set, keeping only records newer
//     than it;
//   - nothing is accepted from an owner memberlist does not consider alive,
//     nor at or below the incarnation of a leave intent.
//
// view is not safe for concurrent use; Catalog guards it with its mutex.
type view struct {
	self   string
	owners map[string]*ownerView
	alive  map[string]bool   // owners memberlist lists as alive or suspect
	floor  map[string]uint64 // highest incarnation that announced leaving
	// idx finds the visible endpoints of a service; touch (may be nil)
	// is told every service whose visible endpoints changed.
	idx   svcIndex
	touch func(service string)
}

type ownerView struct {
	ver  version // highest change applied
	base uint64  // counter of the last full state applied in ver.Inc
	eps  map[string]*epRec
	// contig is the highest counter up to which every change is known;
	// seen holds the counters received above it. contig < ver.Ctr means a
	// change was missed (a lost packet, or a version the sender's queue
	// replaced): the caller asks the owner for its full state.
	contig uint64
	seen   map[uint64]struct{}
}

// holes reports whether some change below the highest known was missed.
func (o *ownerView) holes() bool { return o.contig < o.ver.Ctr }

// mark records that counter ctr was received.
func (o *ownerView) mark(ctr uint64) {
	if ctr <= o.contig {
		return
	}
	if o.seen == nil {
		o.seen = make(map[uint64]struct{})
	}
	o.seen[ctr] = struct{}{}
	o.advance()
}

// advance moves contig over received counters and drops those below it.
func (o *ownerView) advance() {
	for {
		if _, ok := o.seen[o.contig+1]; !ok {
			break
		}
		delete(o.seen, o.contig+1)
		o.contig++
	}
	for c := range o.seen {
		if c <= o.contig {
			delete(o.seen, c)
		}
	}
}

// epRec is one endpoint of an owner, or a tombstone (deleted).
type epRec struct {
	ctr     uint64
	ep      Endpoint
	deleted bool
	at      time.Time // when the tombstone was made
}

func newView(self string) *view {
	return &view{
		self:   self,
		owners: make(map[string]*ownerView),
		alive:  make(map[string]bool),
		floor:  make(map[string]uint64),
		idx:    make(svcIndex),
	}
}

// touched reports a change of svc's visible endpoints.
func (v *view) touched(svc string) {
	if v.touch != nil {
		v.touch(svc)
	}
}

// put stores rec (a record or a tombstone) as endpoint id of owner o,
// keeping the service index and reporting visible changes.
func (v *view) put(owner string, o *ownerView, id string, rec *epRec) {
	old := o.eps[id]
	o.eps[id] = rec
	oldVis := old != nil && !old.deleted
	newVis := !rec.deleted
	if oldVis && newVis && old.ep.Service == rec.ep.Service {
		if !old.ep.Equal(rec.ep) {
			v.touched(rec.ep.Service)
		}
		return
	}
	if oldVis {
		v.idx.remove(old.ep.Service, epRef{owner, id})
		v.touched(old.ep.Service)
	}
	if newVis {
		v.idx.add(rec.ep.Service, epRef{owner, id})
		v.touched(rec.ep.Service)
	}
}

// dropOwner forgets owner's record and unindexes its visible endpoints.
// It reports whether any was visible.
func (v *view) dropOwner(name string) bool {
	o := v.owners[name]
	if o == nil {
		return false
	}
	had := false
	for id, r := range o.eps {
		if !r.deleted {
			had = true
			v.idx.remove(r.ep.Service, epRef{name, id})
			v.touched(r.ep.Service)
		}
	}
	delete(v.owners, name)
	return had
}

// touchOwner reports every service of owner's visible endpoints as
// changed (its network, which endpoints without one take, moved).
func (v *view) touchOwner(name string) {
	if o := v.owners[name]; o != nil {
		for _, r := range o.eps {
			if !r.deleted {
				v.touched(r.ep.Service)
			}
		}
	}
}

// accepts reports whether changes from owner at incarnation inc may apply.
func (v *view) accepts(owner string, inc uint64) bool {
	if owner == v.self || !v.alive[owner] {
		return false
	}
	if f, ok := v.floor[owner]; ok && inc <= f {
		return false
	}
	return true
}

// owner returns the owner's record, resetting it when inc is newer.
func (v *view) owner(name string, inc uint64) *ownerView {
	o := v.owners[name]
	if o == nil || o.ver.Inc < inc {
		v.dropOwner(name)
		o = &ownerView{ver: version{Inc: inc}, eps: make(map[string]*epRec)}
		v.owners[name] = o
	}
	return o
}

// deltaNews reports whether applyDelta could change anything for d, so
// copies already applied are dropped before their signature is checked.
func (v *view) deltaNews(d *delta) bool {
	if !v.accepts(d.Owner, d.Ver.Inc) {
		return false
	}
	o := v.owners[d.Owner]
	if o == nil || o.ver.Inc < d.Ver.Inc {
		return true
	}
	if d.Ver.Inc < o.ver.Inc || d.Ver.Ctr <= o.base || d.Ver.Ctr <= o.contig {
		return false
	}
	_, seen := o.seen[d.Ver.Ctr]
	return !seen
}

// leaveNews reports whether applyLeave would accept l.
func (v *view) leaveNews(l *leaveIntent) bool {
	if l.Owner == v.self {
		return false
	}
	if f, ok := v.floor[l.Owner]; ok && l.Ver.Inc <= f {
		return false
	}
	o := v.owners[l.Owner]
	return o == nil || o.ver.Inc <= l.Ver.Inc
}

// applyDelta applies one endpoint change. news says the delta was new here
// (so the caller re-gossips it and the visible set may have changed); gap
// says some earlier change of the owner is still missing, so the caller
// should ask the owner for its full state.
func (v *view) applyDelta(d *delta, now time.Time) (news, gap bool) {
	if !v.accepts(d.Owner, d.Ver.Inc) {
		return false, false
	}
	if o := v.owners[d.Owner]; o != nil && d.Ver.Inc < o.ver.Inc {
		return false, false
	}
	o := v.owner(d.Owner, d.Ver.Inc)
	if d.Ver.Ctr <= o.base {
		return false, false
	}
	o.mark(d.Ver.Ctr) // even a superseded change fills its counter
	if r := o.eps[d.ID]; r != nil && d.Ver.Ctr <= r.ctr {
		return false, o.holes()
	}
	if d.Delete {
		v.put(d.Owner, o, d.ID, &epRec{ctr: d.Ver.Ctr, deleted: true, at: now})
	} else {
		v.put(d.Owner, o, d.ID, &epRec{ctr: d.Ver.Ctr, ep: d.Ep.clone()})
	}
	o.ver.Ctr = max(o.ver.Ctr, d.Ver.Ctr)
	return true, o.holes()
}

// applyState merges an owner's full state. changed says the visible set of
// that owner changed; behind lists owners the digest shows we lag on.
func (v *view) applyState(s *state, now time.Time) (changed bool, behind []string) {
	if v.accepts(s.Owner, s.Ver.Inc) {
		changed = v.mergeFull(s, now)
	}
	for _, r := range s.Digest {
		if r.Owner == s.Owner || !v.accepts(r.Owner, r.Ver.Inc) {
			continue
		}
		if o := v.owners[r.Owner]; o == nil || o.ver.Inc < r.Ver.Inc || (o.ver.Inc == r.Ver.Inc && o.contig < r.Ver.Ctr) {
			behind = append(behind, r.Owner)
		}
	}
	return changed, behind
}

func (v *view) mergeFull(s *state, now time.Time) bool {
	o := v.owners[s.Owner]
	if o == nil && s.Ver.Ctr == 0 && len(s.Eps) == 0 {
		// An owner that never published in this incarnation: nothing to
		// keep, and no record, so digests stay as small as the set of
		// owners that publish.
		return false
	}
	if o != nil {
		if s.Ver.Inc < o.ver.Inc || (s.Ver.Inc == o.ver.Inc && s.Ver.Ctr < o.base) {
			return false
		}
	}
	before := v.visibleOf(s.Owner)
	o = v.owner(s.Owner, s.Ver.Inc)
	merged := make(map[string]*epRec, len(s.Eps))
	for id, ep := range s.Eps {
		merged[id] = &epRec{ctr: s.Ver.Ctr, ep: ep.clone()}
	}
	for id, r := range o.eps {
		if r.ctr > s.Ver.Ctr {
			merged[id] = r
		}
	}
	for id, r := range o.eps {
		if _, keep := merged[id]; !keep {
			if !r.deleted {
				v.idx.remove(r.ep.Service, epRef{s.Owner, id})
				v.touched(r.ep.Service)
			}
			delete(o.eps, id)
		}
	}
	for id, r := range merged {
		if o.eps[id] != r {
			v.put(s.Owner, o, id, r)
		}
	}
	o.base = s.Ver.Ctr
	o.ver.Ctr = max(o.ver.Ctr, s.Ver.Ctr)
	o.contig = max(o.contig, s.Ver.Ctr)
	o.advance()
	return !maps.EqualFunc(before, v.visibleOf(s.Owner), Endpoint.Equal)
}

// applyLeave handles a leave intent; it reports whether it was new.
func (v *view) applyLeave(l *leaveIntent) bool {
	if l.Owner == v.self {
		return false
	}
	if f, ok := v.floor[l.Owner]; ok && l.Ver.Inc <= f {
		return false
	}
	if o := v.owners[l.Owner]; o != nil && o.ver.Inc > l.Ver.Inc {
		return false
	}
	v.floor[l.Owner] = l.Ver.Inc
	v.dropOwner(l.Owner)
	return true
}

// setAlive records memberlist's verdict on a node. A node that is no
// longer alive loses all its endpoints here; it reports whether any
// visible endpoint went away.
func (v *view) setAlive(name string, alive bool) bool {
	if alive {
		v.alive[name] = true
		return false
	}
	delete(v.alive, name)
	return v.dropOwner(name)
}

// visibleOf returns the live (not deleted) endpoints of one owner.
func (v *view) visibleOf(name string) map[string]Endpoint {
	o := v.owners[name]
	if o == nil {
		return nil
	}
	out := make(map[string]Endpoint, len(o.eps))
	for id, r := range o.eps {
		if !r.deleted {
			out[id] = r.ep
		}
	}
	return out
}

// lagging lists the owners with missed changes.
func (v *view) lagging() []string {
	var out []string
	for name, o := range v.owners {
		if o.holes() && v.alive[name] {
			out = append(out, name)
		}
	}
	return out
}

// digest lists the version known for every owner.
func (v *view) digest() []digestRow {
	rows := make([]digestRow, 0, len(v.owners))
	for _, name := range sortedKeys(v.owners) {
		rows = append(rows, digestRow{Owner: name, Ver: v.owners[name].ver})
	}
	return rows
}

// gc drops tombstones older than ttl. By then no relayed delta older than
// the tombstone can still be in flight.
func (v *view) gc(now time.Time, ttl time.Duration) {
	for _, o := range v.owners {
		for id, r := range o.eps {
			if r.deleted && now.Sub(r.at) > ttl {
				delete(o.eps, id)
			}
		}
	}
}
