package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Keeping this node's registrations across restarts, as a Consul agent
// keeps its services: every change marks the set dirty, and the
// maintenance tick (and Close) writes it to Config.StateFile atomically,
// so a burst of registrations costs a couple of writes a second, not one
// each. At start the file is read back and every registration whose lease
// has not run out is registered again (health checks start over).

// stateFileVersion is the format of the registrations file.
const stateFileVersion = 1

// maxStateFile bounds the registrations file read at start.
const maxStateFile = 64 << 20

type stateFile struct {
	Version       int              `json:"version"`
	Registrations []persistedEntry `json:"registrations"`
}

type persistedEntry struct {
	Registration Registration `json:"registration"`
	// Expires is the lease's end; zero when the registration has no TTL.
	Expires time.Time `json:"expires,omitzero"`
}

// ErrStateFile wraps every problem with the registrations file.
var ErrStateFile = errors.New("catalog: registrations file")

// decodeStateFile parses a registrations file strictly: unknown fields,
// trailing data, another version or an invalid registration are errors
// naming the entry.
func decodeStateFile(b []byte) ([]persistedEntry, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var f stateFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrStateFile, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrStateFile)
	}
	if f.Version != stateFileVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrStateFile, f.Version, stateFileVersion)
	}
	seen := make(map[string]bool, len(f.Registrations))
	for i, e := range f.Registrations {
		if err := e.Registration.Validate(); err != nil {
			return nil, fmt.Errorf("%w: registration %d: %w", ErrStateFile, i, err)
		}
		if seen[e.Registration.ID] {
			return nil, fmt.Errorf("%w: registration %d: id %q listed twice", ErrStateFile, i, e.Registration.ID)
		}
		seen[e.Registration.ID] = true
	}
	return f.Registrations, nil
}

// restore registers again what StateFile holds. A file that cannot be
// read or parsed is moved aside (".bad"), never deleted, and the node
// starts without it.
func (c *Catalog) restore(now time.Time) {
	path := c.cfg.StateFile
	b, err := readLimited(path, maxStateFile)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	var entries []persistedEntry
	if err == nil {
		entries, err = decodeStateFile(b)
	}
	if err != nil {
		bad := path + ".bad"
		rerr := os.Rename(path, bad)
		c.log.Error("catalog: registrations file unreadable; starting without it", "file", path, "moved_to", bad, "err", err, "rename_err", rerr)
		return
	}
	n := 0
	for _, e := range entries {
		r := e.Registration
		if !e.Expires.IsZero() {
			left := e.Expires.Sub(now)
			if left <= 0 {
				continue // the lease ran out while the node was down
			}
			r.TTL = left
		}
		if err := c.Register(r); err != nil {
			c.log.Warn("catalog: registration from the registrations file refused", "endpoint", r.ID, "err", err)
			continue
		}
		n++
	}
	c.log.Info("catalog: registrations restored", "file", path, "count", n)
}

// saveIfDirty writes the registrations file when it changed since the
// last write. Called from the maintenance tick and Close, never with
// c.mu held.
func (c *Catalog) saveIfDirty() {
	if c.cfg.StateFile == "" {
		return
	}
	c.mu.Lock()
	if !c.stateDirty {
		c.mu.Unlock()
		return
	}
	c.stateDirty = false
	f := stateFile{Version: stateFileVersion, Registrations: make([]persistedEntry, 0, len(c.own.regs))}
	for _, id := range sortedKeys(c.own.regs) {
		r := c.own.regs[id]
		e := persistedEntry{Registration: r.Registration, Expires: r.expires}
		e.Registration.Endpoint = e.Registration.Endpoint.clone()
		f.Registrations = append(f.Registrations, e)
	}
	c.mu.Unlock()
	b, err := json.MarshalIndent(f, "", "  ")
	if err == nil {
		err = writeFileAtomic(c.cfg.StateFile, append(b, '\n'), 0o600)
	}
	if err != nil {
		c.mu.Lock()
		c.stateDirty = true // try again at the next tick
		c.mu.Unlock()
		c.log.Warn("catalog: could not write the registrations file", "file", c.cfg.StateFile, "err", err)
	}
}

func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrStateFile, path, limit)
	}
	return b, nil
}

// writeFileAtomic writes data to a temp file beside path, syncs it and
// renames it over path.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	_, werr := tmp.Write(data)
	cerr := tmp.Chmod(mode)
	serr := tmp.Sync()
	xerr := tmp.Close()
	if err := errors.Join(werr, cerr, serr, xerr); err != nil {
		os.Remove(name)
		return err
	}
	if err := os.Rename(name, path); err != nil {
		os.Remove(name)
		return err
	}
	return nil
}
