package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/store"
)

type storeMaker func(t *testing.T) pki.Store

func makers() map[string]storeMaker {
	return map[string]storeMaker{
		"memory": func(t *testing.T) pki.Store { return store.NewMemory() },
		"file": func(t *testing.T) pki.Store {
			s, err := store.OpenFile(filepath.Join(t.TempDir(), "j"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
	}
}

func TestStoreContract(t *testing.T) {
	for name, mk := range makers() {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			s := mk(t)
			if _, err := s.Get(ctx, "a"); !errors.Is(err, pki.ErrNotFound) {
				t.Fatalf("Get(missing) = %v, want ErrNotFound", err)
			}
			val := []byte("1")
			if err := s.Apply(ctx, []pki.Op{{Key: "p/a", Value: val}, {Key: "p/b", Value: []byte("2")}, {Key: "q", Value: []byte("3")}}); err != nil {
				t.Fatal(err)
			}
			val[0] = 'X' // the store keeps its own copy
			if v, err := s.Get(ctx, "p/a"); err != nil || string(v) != "1" {
				t.Fatalf("Get(p/a) = %q, %v; want 1", v, err)
			}
			kvs, err := s.List(ctx, "p/")
			if err != nil || len(kvs) != 2 || kvs[0].Key != "p/a" || kvs[1].Key != "p/b" {
				t.Fatalf("List(p/) = %v, %v; want p/a, p/b", kvs, err)
			}
			// IfAbsent on an existing key fails the whole batch.
			err = s.Apply(ctx, []pki.Op{{Key: "new", Value: []byte("n")}, {Key: "q", Value: []byte("x"), IfAbsent: true}})
			if !errors.Is(err, pki.ErrConflict) {
				t.Fatalf("Apply(IfAbsent existing) = %v, want ErrConflict", err)
			}
			if _, err := s.Get(ctx, "new"); !errors.Is(err, pki.ErrNotFound) {
				t.Fatalf("a failed batch applied part of itself: Get(new) = %v", err)
			}
			if err := s.Apply(ctx, []pki.Op{{Key: "p/a", Delete: true}, {Key: "missing", Delete: true}}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Get(ctx, "p/a"); !errors.Is(err, pki.ErrNotFound) {
				t.Fatalf("Get(deleted) = %v, want ErrNotFound", err)
			}
			if err := s.Apply(ctx, []pki.Op{{Key: ""}}); err == nil {
				t.Fatal("Apply(empty key) = nil, want error")
			}
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			if _, err := s.Get(cctx, "q"); err == nil {
				t.Fatal("Get(cancelled ctx) = nil error")
			}
		})
	}
}

func TestFileReopenAndTornTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "j")
	s, err := store.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := s.Apply(t.Context(), []pki.Op{{Key: fmt.Sprintf("k%d", i), Value: []byte{byte(i)}}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := store.OpenFile(path); err == nil {
		t.Fatal("OpenFile on a file already open = nil error, want locked")
	}
	s.Close()
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("journal mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	// Tear the last record in half, as a crash mid-write would.
	if err := os.Truncate(path, fi.Size()-3); err != nil {
		t.Fatal(err)
	}
	s2, err := store.OpenFile(path)
	if err != nil {
		t.Fatalf("OpenFile(torn) = %v", err)
	}
	kvs, _ := s2.List(t.Context(), "k")
	if len(kvs) != 9 {
		t.Fatalf("after a torn last record: %d keys, want 9", len(kvs))
	}
	if err := s2.Apply(t.Context(), []pki.Op{{Key: "k9", Value: []byte("again")}}); err != nil {
		t.Fatal(err)
	}
	s2.Close()
	s3, err := store.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Close()
	if v, err := s3.Get(t.Context(), "k9"); err != nil || string(v) != "again" {
		t.Fatalf("Get(k9) after rewrite = %q, %v", v, err)
	}
}

func TestFileCompaction(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	s, err := store.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 64<<10)
	for i := range 200 { // 12.8 MB written, 64 KB live
		big[0] = byte(i)
		if err := s.Apply(t.Context(), []pki.Op{{Key: "same", Value: big}}); err != nil {
			t.Fatal(err)
		}
	}
	fi, _ := os.Stat(path)
	if fi.Size() > 2<<20 {
		t.Fatalf("journal is %d bytes after overwriting one 64 KiB key 200 times, want compaction", fi.Size())
	}
	s.Close()
	s2, err := store.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if v, err := s2.Get(t.Context(), "same"); err != nil || v[0] != 199 {
		t.Fatalf("Get(same) after compaction = %v, want the last value", err)
	}
	if _, err := os.Stat(path + ".compact"); !os.IsNotExist(err) {
		t.Fatalf("compaction left its temp file: %v", err)
	}
}

// TestConcurrentIfAbsent: writers racing to create the same keys with
// IfAbsent (as CA instances claiming a token's use slots do) each get
// ErrConflict or success, and every key has exactly one winner, while
// readers list the keys throughout.
func TestConcurrentIfAbsent(t *testing.T) {
	for name, mk := range makers() {
		t.Run(name, func(t *testing.T) {
			s := mk(t)
			const keys, writers = 8, 6
			var mu sync.Mutex
			winners := map[string][]int{}
			stop := make(chan struct{})
			var readers sync.WaitGroup
			readers.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := s.List(t.Context(), "slot/"); err != nil {
						t.Errorf("List(slot/) during writes = %v", err)
						return
					}
				}
			})
			start := make(chan struct{})
			var wg sync.WaitGroup
			for w := range writers {
				wg.Go(func() {
					<-start
					for k := range keys {
						key := fmt.Sprintf("slot/%d", k)
						err := s.Apply(t.Context(), []pki.Op{{Key: key, Value: []byte{byte(w)}, IfAbsent: true}})
						switch {
						case err == nil:
							mu.Lock()
							winners[key] = append(winners[key], w)
							mu.Unlock()
						case !errors.Is(err, pki.ErrConflict):
							t.Errorf("Apply(IfAbsent %s, writer %d) = %v, want nil or ErrConflict", key, w, err)
						}
					}
				})
			}
			close(start)
			wg.Wait()
			close(stop)
			readers.Wait()
			for k := range keys {
				key := fmt.Sprintf("slot/%d", k)
				if len(winners[key]) != 1 {
					t.Errorf("key %s created by writers %v, want exactly one", key, winners[key])
					continue
				}
				v, err := s.Get(t.Context(), key)
				if err != nil || len(v) != 1 || int(v[0]) != winners[key][0] {
					t.Errorf("Get(%s) = %v, %v; want the winner's value %d", key, v, err, winners[key][0])
				}
			}
		})
	}
}
