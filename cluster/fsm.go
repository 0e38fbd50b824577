package cluster

import (
	"context"
	"io"
	"sync"

	"github.com/google/btree"
	"github.com/hashicorp/raft"

	"github.com/meshgate/meshgate/internal/liveness"
)

// fsm is the replicated state machine: an ordered map of key -> Record.
// raft calls Apply, Snapshot and Restore from its FSM goroutine, one at a
// time; readers on other goroutines take mu for reading.
type fsm struct {
	mu      sync.RWMutex // guards tree, index and applied
	tree    *btree.BTreeG[*Record]
	index   uint64        // last log index applied (or restored)
	applied chan struct{} // closed and replaced after every apply/restore

	watchMu  sync.Mutex // guards watchers
	watchers map[*watcher]struct{}

	beat liveness.Beat // busy while Apply or Restore runs (Node.Alive)
}

// watcher is one Watch subscription.
type watcher struct {
	prefix string
	ch     chan struct{}
}

// applyResult is what fsm.Apply returns through raft's ApplyFuture.
type applyResult struct {
	err error
}

var _ raft.FSM = (*fsm)(nil)

func newFSM() *fsm {
	return &fsm{
		tree:     newTree(),
		applied:  make(chan struct{}),
		watchers: make(map[*watcher]struct{}),
	}
}

func newTree() *btree.BTreeG[*Record] {
	return btree.NewG(32, func(a, b *Record) bool { return a.Key < b.Key })
}

// Apply implements raft.FSM. It is deterministic: the same log yields the
// same state on every node.
func (f *fsm) Apply(l *raft.Log) any {
	defer f.beat.Busy()()
	ops, err := decodeCommand(l.Data)
	if err != nil {
		f.advance(l.Index, nil)
		return applyResult{err: err}
	}
	f.mu.Lock()
	for _, op := range ops {
		if op.Type != OpCheck {
			continue
		}
		var have uint64
		if r, ok := f.tree.Get(&Record{Key: op.Key}); ok {
			have = r.ModIndex
		}
		if have != op.Index {
			f.mu.Unlock()
			f.advance(l.Index, nil)
			return applyResult{err: &ConflictError{Key: op.Key, Want: op.Index, Have: have}}
		}
	}
	changed := make([]string, 0, len(ops))
	for _, op := range ops {
		switch op.Type {
		case OpPut:
			r := &Record{Key: op.Key, Value: append([]byte(nil), op.Value...), CreateIndex: l.Index, ModIndex: l.Index}
			if old, ok := f.tree.Get(r); ok {
				r.CreateIndex = old.CreateIndex
			}
			f.tree.ReplaceOrInsert(r)
			changed = append(changed, op.Key)
		case OpDelete:
			if _, ok := f.tree.Delete(&Record{Key: op.Key}); ok {
				changed = append(changed, op.Key)
			}
		case OpDeletePrefix:
			var doomed []*Record
			f.tree.AscendGreaterOrEqual(&Record{Key: op.Key}, func(r *Record) bool {
				if !hasPrefix(r.Key, op.Key) {
					return false
				}
				doomed = append(doomed, r)
				return true
			})
			for _, r := range doomed {
				f.tree.Delete(r)
				changed = append(changed, r.Key)
			}
		}
	}
	f.mu.Unlock()
	f.advance(l.Index, changed)
	return applyResult{}
}

// advance records that index was applied, wakes index waiters and notifies
// watchers of the changed keys (nil changed = nothing changed, "all" is
// signalled by restore separately).
//
// Watchers are signalled before index waiters wake, so a caller that
// returns from Sync finds every watch for the changes it waited for
// already fired.
func (f *fsm) advance(index uint64, changed []string) {
	if len(changed) > 0 {
		f.notify(func(prefix string) bool {
			for _, k := range changed {
				if hasPrefix(k, prefix) {
					return true
				}
			}
			return false
		})
	}
	f.mu.Lock()
	if index > f.index {
		f.index = index
	}
	close(f.applied)
	f.applied = make(chan struct{})
	f.mu.Unlock()
}

func (f *fsm) notify(match func(prefix string) bool) {
	f.watchMu.Lock()
	defer f.watchMu.Unlock()
	for w := range f.watchers {
		if match(w.prefix) {
			select {
			case w.ch <- struct{}{}:
			default:
			}
		}
	}
}

// watch subscribes to changes of keys under prefix.
func (f *fsm) watch(prefix string) (<-chan struct{}, func()) {
	w := &watcher{prefix: prefix, ch: make(chan struct{}, 1)}
	f.watchMu.Lock()
	f.watchers[w] = struct{}{}
	f.watchMu.Unlock()
	var once sync.Once
	return w.ch, func() {
		once.Do(func() {
			f.watchMu.Lock()
			delete(f.watchers, w)
			f.watchMu.Unlock()
		})
	}
}

// appliedIndex returns the last applied index.
func (f *fsm) appliedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.index
}

// waitIndex blocks until index has been applied locally or ctx ends.
func (f *fsm) waitIndex(ctx context.Context, index uint64) error {
	for {
		f.mu.RLock()
		done, ch := f.index >= index, f.applied
		f.mu.RUnlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// get returns a copy of the record at key.
func (f *fsm) get(key string) (Record, bool) {
	f.mu.RLock()
	r, ok := f.tree.Get(&Record{Key: key})
	f.mu.RUnlock()
	if !ok {
		return Record{}, false
	}
	return copyRecord(r), true
}

// list returns copies of every record whose key starts with prefix, in key
// order.
func (f *fsm) list(prefix string) []Record {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []Record
	f.tree.AscendGreaterOrEqual(&Record{Key: prefix}, func(r *Record) bool {
		if !hasPrefix(r.Key, prefix) {
			return false
		}
		out = append(out, copyRecord(r))
		return true
	})
	return out
}

func copyRecord(r *Record) Record {
	c := *r
	c.Value = append([]byte(nil), r.Value...)
	return c
}

// Snapshot implements raft.FSM: a lazy copy-on-write clone of the tree, so
// Persist can stream it while Apply goes on.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &fsmSnapshot{tree: f.tree.Clone(), index: f.index}, nil
}

// Restore implements raft.FSM: it replaces the whole state with the
// snapshot, or leaves the state untouched if the snapshot is bad.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer f.beat.Busy()()
	defer rc.Close()
	tree, index, err := readSnapshot(rc)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.tree = tree
	f.mu.Unlock()
	f.notify(func(string) bool { return true })
	f.mu.Lock()
	f.index = index
	close(f.applied)
	f.applied = make(chan struct{})
	f.mu.Unlock()
	return nil
}

// fsmSnapshot is a point-in-time view handed to raft's snapshot goroutine.
type fsmSnapshot struct {
	tree  *btree.BTreeG[*Record]
	index uint64
}

// Persist implements raft.FSMSnapshot.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := writeSnapshot(sink, s.tree, s.index); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

// Release implements raft.FSMSnapshot.
func (s *fsmSnapshot) Release() {}
