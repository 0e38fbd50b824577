package catalog

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Keeping this node's registrations across restarts, as a Consul agent
// keeps its services: one small file per registration in Config.StateDir,
// written (and synced) before Register returns and removed before
// Deregister returns, so an acknowledged registration survives a crash
// and a change costs one small write whatever the number of endpoints. At
// start every file is read back and each registration whose lease has not
// run out is registered again (health checks start over).

// stateFileVersion is the format of a registration file.
const stateFileVersion = 1

// maxStateFile bounds one registration file read at start.
const maxStateFile = 1 << 20

// stateFileExt ends every registration file's name.
const stateFileExt = ".json"

type stateFile struct {
	Version      int          `json:"version"`
	Registration Registration `json:"registration"`
	// Expires is the lease's end; zero when the registration has no TTL.
	Expires time.Time `json:"expires,omitzero"`
}

// ErrStateFile wraps every problem with a registration file.
var ErrStateFile = errors.New("catalog: registration file")

// decodeStateFile parses one registration file strictly: unknown fields,
// trailing data, another version or an invalid registration are errors.
func decodeStateFile(b []byte) (stateFile, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var f stateFile
	if err := dec.Decode(&f); err != nil {
		return stateFile{}, fmt.Errorf("%w: %v", ErrStateFile, err)
	}
	if dec.More() {
		return stateFile{}, fmt.Errorf("%w: trailing data after the JSON object", ErrStateFile)
	}
	if f.Version != stateFileVersion {
		return stateFile{}, fmt.Errorf("%w: version %d, want %d", ErrStateFile, f.Version, stateFileVersion)
	}
	if err := f.Registration.Validate(); err != nil {
		return stateFile{}, fmt.Errorf("%w: %w", ErrStateFile, err)
	}
	return f, nil
}

// stateFileName is the file of registration id: its ID in unpadded
// URL-safe base64 (IDs may hold '/'; 128 bytes give 171 characters).
func stateFileName(id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(id)) + stateFileExt
}

// persist writes or removes the file of registration id. Called with
// c.fileMu held and c.mu not held.
func (c *Catalog) persist(id string, f *stateFile) error {
	if c.cfg.StateDir == "" {
		return nil
	}
	path := filepath.Join(c.cfg.StateDir, stateFileName(id))
	if f == nil {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("catalog: remove registration file: %w", err)
		}
		return nil
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("catalog: encode registration %q: %w", id, err)
	}
	if err := writeFileAtomic(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("catalog: write registration file: %w", err)
	}
	return nil
}

// restore registers again what StateDir holds. A file that cannot be read
// or parsed, or whose name does not match its ID, is moved aside (".bad"),
// never deleted, and the node starts without it.
func (c *Catalog) restore(now time.Time) {
	dir := c.cfg.StateDir
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		c.log.Error("catalog: registrations folder unreadable; starting without it", "dir", dir, "err", err)
		return
	}
	n := 0
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, stateFileExt) || strings.HasPrefix(name, ".") {
			continue
		}
		path := filepath.Join(dir, name)
		b, err := readLimited(path, maxStateFile)
		var f stateFile
		if err == nil {
			f, err = decodeStateFile(b)
		}
		if err == nil && stateFileName(f.Registration.ID) != name {
			err = fmt.Errorf("%w: holds registration %q, whose file would be %s", ErrStateFile, f.Registration.ID, stateFileName(f.Registration.ID))
		}
		if err != nil {
			rerr := os.Rename(path, path+".bad")
			c.log.Error("catalog: registration file unreadable; skipped", "file", path, "moved_to", path+".bad", "err", err, "rename_err", rerr)
			continue
		}
		r := f.Registration
		if !f.Expires.IsZero() {
			left := f.Expires.Sub(now)
			if left <= 0 {
				_ = os.Remove(path) // the lease ran out while the node was down
				continue
			}
			r.TTL = left
		}
		if err := c.Register(r); err != nil {
			c.log.Warn("catalog: stored registration refused", "endpoint", r.ID, "file", path, "err", err)
			continue
		}
		n++
	}
	if n > 0 {
		c.log.Info("catalog: registrations restored", "dir", dir, "count", n)
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
