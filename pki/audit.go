package pki

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Outcomes of an audited request.
const (
	OutcomeIssued  = "issued"
	OutcomeRefused = "refused"
)

// AuditRecord is one issuance or refusal.
type AuditRecord struct {
	Time    time.Time `json:"time"`
	Node    string    `json:"node"`
	Outcome string    `json:"outcome"`
	// Reason and Detail say why a request was refused.
	Reason Reason `json:"reason,omitempty"`
	Detail string `json:"detail,omitempty"`
	// Serial of the issued certificate, lowercase hex.
	Serial string `json:"serial,omitempty"`
	// Identity issued, or asked for (when known) in a refusal.
	Identity string `json:"identity,omitempty"`
	// Caller is how the caller authenticated: "token:<id>",
	// "cert:<spiffe id>", "operator:<name>" or "none".
	Caller string `json:"caller,omitempty"`
	// Remote is the caller's network address, when known.
	Remote   string    `json:"remote,omitempty"`
	NotAfter time.Time `json:"notAfter,omitzero"`
	// TokenUse is, for an issuance with a use-limited token, which of the
	// token's uses it consumed (1-based); 0 otherwise.
	TokenUse int `json:"tokenUse,omitempty"`

	// authenticated says the caller's credential verified; refusals of
	// other callers are not audited (see CA.refused). Not stored.
	authenticated bool
}

// maxAuditField caps each client-influenced text field of an audit record
// (Detail, Identity, Caller, Remote) in bytes; a longer value is cut and
// marked with truncatedMark and the number of bytes dropped.
const maxAuditField = 512

// truncatedMark ends a field that truncateField cut.
const truncatedMark = "...[truncated "

// truncateField cuts s to maxAuditField bytes (at a UTF-8 boundary),
// marking the cut with how many bytes were dropped.
func truncateField(s string) string {
	if len(s) <= maxAuditField {
		return s
	}
	cut := maxAuditField - len(truncatedMark) - len(" bytes]") - 20
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + truncatedMark + strconv.Itoa(len(s)-cut) + " bytes]"
}

// bounded returns rec with its client-influenced fields truncated.
func (rec AuditRecord) bounded() AuditRecord {
	rec.Detail = truncateField(rec.Detail)
	rec.Identity = truncateField(rec.Identity)
	rec.Caller = truncateField(rec.Caller)
	rec.Remote = truncateField(rec.Remote)
	return rec
}

// auditEntry is one record waiting for the group commit.
type auditEntry struct {
	rec   AuditRecord
	token string     // hash of the unlimited token whose use this issuance counts
	done  chan error // buffered(1); receives the commit result
}

var auditEntryPool = sync.Pool{New: func() any { return &auditEntry{done: make(chan error, 1)} }}

// auditor makes audit records durable in batches: a request enqueues its
// record and waits; one goroutine takes everything queued (up to
// maxBatch) and writes it with one Store.Apply, so N concurrent issuances
// cost one replicated write instead of N.
//
// A batch also waits, up to linger, for the records of issuances already
// in progress (announced with begin), when store writes are slow (the
// previous one took lingerMinWrite or more): such a write has a fixed
// cost (an fsync, a raft round) that a busy CA otherwise pays for nearly
// every certificate, as records arrive one at a time while the previous
// write is in progress. Nothing waits when no issuance is in progress,
// nor on a store fast enough that a write costs less than the wait.
type auditor struct {
	store    Store
	node     string
	maxBatch int
	timeout  time.Duration
	linger   time.Duration
	now      func() time.Time
	log      *slog.Logger
	m        *metrics
	// extraOps adds writes to a batch (token use counts); called from the
	// committer goroutine only.
	extraOps func(batch []*auditEntry) []Op

	q    chan *auditEntry
	stop chan struct{}
	wg   sync.WaitGroup

	// coming counts issuances that announced a record (begin) and have
	// not yet enqueued it (recordBegun) or given up (cancel); none gets a
	// signal when it drops to zero.
	coming atomic.Int64
	none   chan struct{}
	// lingerExpired counts batches written because linger ran out.
	lingerExpired atomic.Int64

	seq       uint64        // committer goroutine only
	lastWrite time.Duration // committer goroutine only: the previous Apply's duration

	// Retention (committer goroutine only): this node's batches in the
	// store, oldest first, and how many records they hold; loaded from the
	// store before the first write.
	maxRecords int
	maxAge     time.Duration
	kept       []keptBatch
	keptN      int
	keptLoaded bool

	mu     sync.RWMutex // guards closed; held shared while enqueueing
	closed bool
}

// lingerMinWrite is how long a store write must take for batches to wait
// for more records (see auditor).
const lingerMinWrite = 100 * time.Microsecond

func newAuditor(cfg Config, store Store, now func() time.Time, log *slog.Logger, m *metrics) *auditor {
	a := &auditor{
		store:    store,
		node:     cfg.NodeID,
		maxBatch: cfg.AuditMaxBatch,
		timeout:  cfg.AuditTimeout,
		linger:   cfg.AuditLinger,
		now:      now,
		log:      log,
		m:        m,
		q:        make(chan *auditEntry, cfg.AuditQueue),
		stop:     make(chan struct{}),
		none:     make(chan struct{}, 1),

		maxRecords: cfg.AuditMaxRecords,
		maxAge:     cfg.AuditMaxAge,
	}
	a.wg.Add(1)
	go a.run()
	return a
}

// begin announces that a record will follow (recordBegun), or not
// (cancel).
func (a *auditor) begin() { a.coming.Add(1) }

// cancel withdraws a begin that will have no record.
func (a *auditor) cancel() {
	if a.coming.Add(-1) == 0 {
		a.wake()
	}
}

// wake tells a lingering batch that nothing more is coming.
func (a *auditor) wake() {
	select {
	case a.none <- struct{}{}:
	default:
	}
}

// recordBegun is record for a caller that called begin.
func (a *auditor) recordBegun(ctx context.Context, rec AuditRecord, token string) error {
	return a.enqueue(ctx, rec, token, true)
}

// record enqueues rec and waits until it is durable. token is the hash of
// the unlimited token whose use the record counts, or "".
func (a *auditor) record(ctx context.Context, rec AuditRecord, token string) error {
	return a.enqueue(ctx, rec, token, false)
}

func (a *auditor) enqueue(ctx context.Context, rec AuditRecord, token string, begun bool) error {
	e := auditEntryPool.Get().(*auditEntry)
	e.rec, e.token = rec.bounded(), token
	a.mu.RLock()
	if a.closed {
		a.mu.RUnlock()
		auditEntryPool.Put(e)
		if begun {
			a.cancel()
		}
		return ErrClosed
	}
	select {
	case a.q <- e:
	case <-ctx.Done():
		a.mu.RUnlock()
		auditEntryPool.Put(e)
		if begun {
			a.cancel()
		}
		return fmt.Errorf("%w: %v", ErrAudit, ctx.Err())
	}
	a.mu.RUnlock()
	if begun {
		// After enqueueing: once nothing is coming, every announced
		// record is in the queue, and a lingering batch takes them all.
		a.cancel()
	}
	// The committer always answers, within the audit timeout.
	err := <-e.done
	e.rec = AuditRecord{}
	auditEntryPool.Put(e)
	return err
}

// close stops accepting records, commits what is queued and waits.
func (a *auditor) close() {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		a.wg.Wait()
		return
	}
	a.closed = true
	a.mu.Unlock()
	close(a.stop)
	a.wg.Wait()
}

func (a *auditor) run() {
	defer a.wg.Done()
	batch := make([]*auditEntry, 0, a.maxBatch)
	var linger *time.Timer
	for {
		select {
		case e := <-a.q:
			batch = append(batch, e)
		case <-a.stop:
			// No sender is left (close holds the lock): drain and go.
			for {
				select {
				case e := <-a.q:
					batch = append(batch, e)
					if len(batch) == a.maxBatch {
						a.commit(batch)
						batch = batch[:0]
					}
				default:
					if len(batch) > 0 {
						a.commit(batch)
					}
					return
				}
			}
		}
	fill:
		for len(batch) < a.maxBatch {
			select {
			case e := <-a.q:
				batch = append(batch, e)
			default:
				break fill
			}
		}
		if a.linger > 0 && a.lastWrite >= lingerMinWrite && len(batch) < a.maxBatch && a.coming.Load() > 0 {
			if linger == nil {
				linger = time.NewTimer(a.linger)
			} else {
				linger.Reset(a.linger)
			}
		wait:
			for len(batch) < a.maxBatch && a.coming.Load() > 0 {
				select {
				case e := <-a.q:
					batch = append(batch, e)
				case <-a.none:
				case <-linger.C:
					a.lingerExpired.Add(1)
					break wait
				case <-a.stop:
					break wait // commit now; the drain above handles the rest
				}
			}
			linger.Stop()
			// Records enqueued before coming dropped are in the queue.
		more:
			for len(batch) < a.maxBatch {
				select {
				case e := <-a.q:
					batch = append(batch, e)
				default:
					break more
				}
			}
		}
		a.commit(batch)
		clear(batch)
		batch = batch[:0]
	}
}

func (a *auditor) commit(batch []*auditEntry) {
	start := time.Now()
	recs := make([]AuditRecord, len(batch))
	for i, e := range batch {
		recs[i] = e.rec
	}
	val, err := marshalAudit(recs)
	if err == nil {
		a.seq++
		key := auditKey(a.node, a.now().UnixNano(), a.seq)
		ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
		expired := a.expired(ctx, len(recs))
		ops := make([]Op, 0, 1+len(batch)+expired)
		ops = append(ops, Op{Key: key, Value: val})
		if a.extraOps != nil {
			ops = append(ops, a.extraOps(batch)...)
		}
		for _, k := range a.kept[:expired] {
			ops = append(ops, Op{Key: k.key, Delete: true})
		}
		t0 := time.Now()
		err = a.store.Apply(ctx, ops)
		a.lastWrite = time.Since(t0)
		cancel()
		if err == nil && a.keptLoaded {
			for _, k := range a.kept[:expired] {
				a.keptN -= k.n
			}
			a.kept = append(a.kept[expired:], keptBatch{key: key, nanos: a.now().UnixNano(), n: len(recs)})
			a.keptN += len(recs)
		}
		if expired > 0 && err == nil {
			a.m.auditPruned.Add(float64(expired))
		}
	}
	if err != nil {
		a.m.auditErrors.Inc()
		a.log.Error("audit write failed; certificates of this batch are not handed out", "records", len(batch), "err", err)
		err = fmt.Errorf("%w: %v", ErrAudit, err)
	}
	a.m.auditBatch.Observe(float64(len(batch)))
	a.m.auditCommit.Observe(time.Since(start).Seconds())
	for _, e := range batch {
		e.done <- err
	}
}

// keptBatch is one of this node's audit batches in the store.
type keptBatch struct {
	key   string
	nanos int64 // from the key
	n     int   // records
}

// expired returns how many of the oldest kept batches the next write
// (of adding records) deletes: while the node would keep more than
// maxRecords, or a batch is older than maxAge. It loads the node's
// batches from the store first if needed; if that fails nothing is
// pruned this time.
func (a *auditor) expired(ctx context.Context, adding int) int {
	if a.maxRecords == 0 && a.maxAge == 0 {
		return 0
	}
	if !a.keptLoaded {
		if err := a.loadKept(ctx); err != nil {
			a.log.Warn("audit retention: listing this node's batches failed; not pruning yet", "err", err)
			return 0
		}
	}
	cutoff := a.now().Add(-a.maxAge).UnixNano()
	n, total := 0, a.keptN+adding
	for n < len(a.kept) {
		k := a.kept[n]
		if (a.maxRecords > 0 && total > a.maxRecords) || (a.maxAge > 0 && k.nanos < cutoff) {
			total -= k.n
			n++
			continue
		}
		break
	}
	return n
}

// loadKept lists this node's batches (sorted by key, so oldest first).
func (a *auditor) loadKept(ctx context.Context) error {
	prefix := keyAudit + a.node + "/"
	kvs, err := a.store.List(ctx, prefix)
	if err != nil {
		return err
	}
	a.kept, a.keptN = a.kept[:0], 0
	for _, kv := range kvs {
		k, err := parseKeptBatch(prefix, kv)
		if err != nil {
			// Delete what cannot be read: it only grows the state.
			a.log.Warn("audit retention: unreadable batch, deleting it first", "key", kv.Key, "err", err)
		}
		a.kept = append(a.kept, k)
		a.keptN += k.n
	}
	a.keptLoaded = true
	return nil
}

// parseKeptBatch reads a stored batch's time (from its key) and record
// count. An unreadable batch has time 0 and count 0, so it is the first to
// be pruned by age.
func parseKeptBatch(prefix string, kv KV) (keptBatch, error) {
	k := keptBatch{key: kv.Key}
	rest := strings.TrimPrefix(kv.Key, prefix)
	digits, _, ok := strings.Cut(rest, "-")
	if !ok || len(digits) != 20 {
		return k, fmt.Errorf("%w: audit key %q has no 20-digit time", ErrAudit, kv.Key)
	}
	nanos, err := strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return k, fmt.Errorf("%w: audit key %q: %v", ErrAudit, kv.Key, err)
	}
	var recs []json.RawMessage
	if err := json.Unmarshal(kv.Value, &recs); err != nil {
		return k, fmt.Errorf("%w: audit batch %q: %v", ErrAudit, kv.Key, err)
	}
	k.nanos, k.n = nanos, len(recs)
	return k, nil
}

// auditKey is keyAudit + node + "/" + 20-digit unix nanos + "-" +
// 8-hex-digit sequence number (longer if it ever exceeds 32 bits), so
// that a node's batches sort by time.
func auditKey(node string, nanos int64, seq uint64) string {
	b := make([]byte, 0, len(keyAudit)+len(node)+1+20+1+16)
	b = append(b, keyAudit...)
	b = append(b, node...)
	b = append(b, '/')
	b = appendPadded(b, strconv.AppendInt(nil, nanos, 10), 20)
	b = append(b, '-')
	b = appendPadded(b, strconv.AppendUint(nil, seq, 16), 8)
	return string(b)
}

// appendPadded appends digits left-padded with zeros to width.
func appendPadded(b, digits []byte, width int) []byte {
	for range width - len(digits) {
		b = append(b, '0')
	}
	return append(b, digits...)
}

// AuditLog returns the audit records of every node with Time at or after
// since, oldest first.
func (ca *CA) AuditLog(ctx context.Context, since time.Time) ([]AuditRecord, error) {
	kvs, err := ca.store.List(ctx, keyAudit)
	if err != nil {
		return nil, fmt.Errorf("pki: audit log: %w", err)
	}
	var out []AuditRecord
	for _, kv := range kvs {
		var recs []AuditRecord
		if err := json.Unmarshal(kv.Value, &recs); err != nil {
			return nil, fmt.Errorf("pki: audit batch %s: %w", kv.Key, err)
		}
		for _, r := range recs {
			if !r.Time.Before(since) {
				out = append(out, r)
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out, nil
}
