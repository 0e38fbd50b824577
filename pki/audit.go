package pki

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"
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
}

// auditEntry is one record waiting for the group commit.
type auditEntry struct {
	rec   AuditRecord
	token string     // hash of the token whose use this issuance consumed
	done  chan error // buffered(1); receives the commit result
}

var auditEntryPool = sync.Pool{New: func() any { return &auditEntry{done: make(chan error, 1)} }}

// auditor makes audit records durable in batches: a request enqueues its
// record and waits; one goroutine takes everything queued (up to
// maxBatch) and writes it with one Store.Apply, so N concurrent issuances
// cost one replicated write instead of N.
type auditor struct {
	store    Store
	node     string
	maxBatch int
	timeout  time.Duration
	now      func() time.Time
	log      *slog.Logger
	m        *metrics
	// extraOps adds writes to a batch (token use counts); called from the
	// committer goroutine only.
	extraOps func(batch []*auditEntry) []Op

	q    chan *auditEntry
	stop chan struct{}
	wg   sync.WaitGroup

	mu     sync.RWMutex // guards closed; held shared while enqueueing
	closed bool

	seq uint64 // committer goroutine only
}

func newAuditor(cfg Config, store Store, now func() time.Time, log *slog.Logger, m *metrics) *auditor {
	a := &auditor{
		store:    store,
		node:     cfg.NodeID,
		maxBatch: cfg.AuditMaxBatch,
		timeout:  cfg.AuditTimeout,
		now:      now,
		log:      log,
		m:        m,
		q:        make(chan *auditEntry, cfg.AuditQueue),
		stop:     make(chan struct{}),
	}
	a.wg.Add(1)
	go a.run()
	return a
}

// record enqueues rec and waits until it is durable. token is the hash of
// the token whose use the record consumes, or "".
func (a *auditor) record(ctx context.Context, rec AuditRecord, token string) error {
	e := auditEntryPool.Get().(*auditEntry)
	e.rec, e.token = rec, token
	a.mu.RLock()
	if a.closed {
		a.mu.RUnlock()
		auditEntryPool.Put(e)
		return ErrClosed
	}
	select {
	case a.q <- e:
	case <-ctx.Done():
		a.mu.RUnlock()
		auditEntryPool.Put(e)
		return fmt.Errorf("%w: %v", ErrAudit, ctx.Err())
	}
	a.mu.RUnlock()
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
	val, err := json.Marshal(recs)
	if err == nil {
		a.seq++
		key := fmt.Sprintf("%s%s/%020d-%08x", keyAudit, a.node, a.now().UnixNano(), a.seq)
		ops := make([]Op, 0, 1+len(batch))
		ops = append(ops, Op{Key: key, Value: val})
		if a.extraOps != nil {
			ops = append(ops, a.extraOps(batch)...)
		}
		ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
		err = a.store.Apply(ctx, ops)
		cancel()
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
