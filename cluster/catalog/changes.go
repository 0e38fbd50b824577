package catalog

import (
	"slices"
	"sort"
)

// maxChangeLog bounds the change log: past it, superseded records are
// dropped, and if that is not enough every reader is told to re-read
// everything (Changes.All).
const maxChangeLog = 1 << 17

// Changes says which services' endpoints changed after a cursor. See
// Catalog.Changes.
type Changes struct {
	// Cursor is the position to pass to the next Changes call.
	Cursor uint64
	// All says any service may have changed: the reader must take the
	// whole Snapshot. It is set for cursor 0, for a cursor older than
	// the log keeps, and after changes that touch every service (this
	// node's listeners changed, leaving, a trust recheck).
	All bool
	// Services are the services whose entries changed, sorted, each
	// once; nil with All.
	Services []string
	// Entries are the current entries of Services, as Snapshot lists
	// them (sorted by Service, Port, Network, Addr, Owner, ID); a
	// service that has none left contributes none. nil with All.
	Entries []Entry
}

// changeRec is one service change.
type changeRec struct {
	seq uint64
	svc string
}

// changeLog records which services changed, coalesced per reader by
// cursor. Not safe for concurrent use; Catalog guards it with its mutex.
type changeLog struct {
	seq   uint64 // the newest change
	floor uint64 // a cursor below it gets All
	recs  []changeRec
	last  map[string]uint64 // service -> seq of its newest record
}

func newChangeLog() changeLog {
	l := changeLog{last: map[string]uint64{}}
	l.all()
	return l
}

// note records a change of service svc.
func (l *changeLog) note(svc string) {
	l.seq++
	l.recs = append(l.recs, changeRec{seq: l.seq, svc: svc})
	l.last[svc] = l.seq
	if len(l.recs) > maxChangeLog {
		l.compact()
	}
}

// compact drops superseded records; when the log is still full it
// starts over (readers behind get All).
func (l *changeLog) compact() {
	l.recs = slices.DeleteFunc(l.recs, func(r changeRec) bool { return l.last[r.svc] != r.seq })
	if len(l.recs) > maxChangeLog/2 {
		l.all()
	}
}

// all records a change of every service.
func (l *changeLog) all() {
	l.seq++
	l.floor = l.seq
	l.recs = l.recs[:0]
	clear(l.last)
}

// since returns the services changed after cursor, sorted, or all =
// true when the log does not reach back to it.
func (l *changeLog) since(cursor uint64) (svcs []string, all bool) {
	if cursor < l.floor || cursor > l.seq {
		return nil, true
	}
	i := sort.Search(len(l.recs), func(i int) bool { return l.recs[i].seq > cursor })
	for _, r := range l.recs[i:] {
		if l.last[r.svc] == r.seq {
			svcs = append(svcs, r.svc)
		}
	}
	slices.Sort(svcs)
	return svcs, false
}

// epRef names one endpoint in the service index.
type epRef struct {
	owner, id string
}

// svcIndex maps a service to the endpoints that serve it.
type svcIndex map[string][]epRef

func (x svcIndex) add(svc string, r epRef) { x[svc] = append(x[svc], r) }

func (x svcIndex) remove(svc string, r epRef) {
	refs := x[svc]
	for i := range refs {
		if refs[i] == r {
			refs[i] = refs[len(refs)-1]
			refs = refs[:len(refs)-1]
			break
		}
	}
	if len(refs) == 0 {
		delete(x, svc)
	} else {
		x[svc] = refs
	}
}

// Changes returns which services' endpoints changed after cursor, with
// their current entries, in one consistent view. Pass 0 the first time
// (the answer is All) and the returned Cursor after that. A reader that
// applies the answer (Entries for Services, or the whole Snapshot for
// All) and keeps the rest holds the same endpoints as the Snapshot of
// the moment of the call. Cheap: the work is proportional to the
// change, not to the catalog.
func (c *Catalog) Changes(cursor uint64) Changes {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checkReservedLocked()
	svcs, all := c.chg.since(cursor)
	out := Changes{Cursor: c.chg.seq, All: all}
	if all {
		return out
	}
	out.Services = svcs
	for _, s := range svcs {
		out.Entries = c.serviceEntriesLocked(s, out.Entries)
	}
	return out
}

// serviceEntriesLocked appends the entries of svc as entriesLocked
// would list them.
func (c *Catalog) serviceEntriesLocked(svc string, out []Entry) []Entry {
	start := len(out)
	if !c.leaving {
		for _, id := range c.ownIdx[svc] {
			if r := c.own.regs[id]; r != nil && r.published && r.Service == svc {
				if _, res := reservedAddr(c.cfg.Reserved, r.Addr); res {
					continue
				}
				e := Entry{Owner: c.cfg.Name, ID: id, Endpoint: r.Endpoint.clone()}
				if e.Network == "" {
					e.Network = c.cfg.Network
				}
				out = append(out, e)
			}
		}
	}
	for _, ref := range c.view.idx[svc] {
		if !c.view.alive[ref.owner] {
			continue
		}
		if c.cfg.Verifier != nil && !c.trust[ref.owner].trusted() {
			continue
		}
		o := c.view.owners[ref.owner]
		if o == nil {
			continue
		}
		rec := o.eps[ref.id]
		if rec == nil || rec.deleted {
			continue
		}
		if _, res := reservedAddr(c.cfg.Reserved, rec.ep.Addr); res {
			continue
		}
		e := Entry{Owner: ref.owner, ID: ref.id, Endpoint: rec.ep.clone()}
		if e.Network == "" {
			if mi := c.members[ref.owner]; mi != nil {
				e.Network = mi.meta.Network
			}
		}
		out = append(out, e)
	}
	slices.SortFunc(out[start:], compareEntries)
	return out
}

// checkReservedLocked notices a change of this node's listeners: every
// entry is filtered again.
func (c *Catalog) checkReservedLocked() {
	if g := reserverGen(c.cfg.Reserved); g != c.reservedGen {
		c.snap, c.snapEntries, c.reservedGen = nil, nil, g
		c.chg.all()
	}
}

// ownPublishedLocked keeps the index of this node's published endpoints
// and the change log up to date when id is published (svc) or withdrawn
// (on false).
func (c *Catalog) ownPublishedLocked(id, svc string, on bool) {
	if prev, ok := c.ownSvc[id]; ok {
		ids := c.ownIdx[prev]
		if i := slices.Index(ids, id); i >= 0 {
			ids[i] = ids[len(ids)-1]
			ids = ids[:len(ids)-1]
		}
		if len(ids) == 0 {
			delete(c.ownIdx, prev)
		} else {
			c.ownIdx[prev] = ids
		}
		delete(c.ownSvc, id)
		c.chg.note(prev)
	}
	if on {
		c.ownSvc[id] = svc
		c.ownIdx[svc] = append(c.ownIdx[svc], id)
		c.chg.note(svc)
	}
}
