package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// MaxFiles is the largest number of YAML files Load reads from a folder.
const MaxFiles = 1000

// Load reads the resources at path: a single file (any name), or a folder
// whose *.yaml and *.yml files are read in name order. Folders are not
// read recursively, and names starting with "." are skipped. An empty
// folder gives an empty Set.
//
// Like Parse, Load reports every problem in every file (including
// duplicates across files) and returns a nil Set if there is any: one bad
// file refuses the whole configuration. Errors opening or reading files
// are *Error values too (File set, Field empty, wrapping ErrInvalid), and
// the os error stays reachable: errors.Is(err, fs.ErrNotExist) works.
// Load is safe to call from many goroutines at once.
func Load(path string) (*Set, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, Errors{fileErr(path, err)}
	}
	var files []string
	if fi.IsDir() {
		entries, err := os.ReadDir(path)
		if err != nil {
			return nil, Errors{fileErr(path, err)}
		}
		for _, e := range entries {
			name := e.Name()
			if strings.HasPrefix(name, ".") {
				continue
			}
			if ext := filepath.Ext(name); ext != ".yaml" && ext != ".yml" {
				continue
			}
			full := filepath.Join(path, name)
			if st, err := os.Stat(full); err == nil && st.IsDir() {
				continue // a folder named x.yaml
			}
			files = append(files, full)
		}
		slices.Sort(files)
		if len(files) > MaxFiles {
			return nil, Errors{{File: path, Msg: fmt.Sprintf("folder has %d YAML files; the limit is %d", len(files), MaxFiles), Err: ErrTooLarge}}
		}
	} else {
		files = []string{path}
	}

	p := newParser()
	set := &Set{}
	for _, f := range files {
		data, ferr := readFile(f, MaxFileBytes)
		if ferr != nil {
			p.errs = append(p.errs, ferr)
			continue
		}
		p.file(set, f, data)
	}
	checkSet(set, &p.errs)
	if len(p.errs) > 0 {
		return nil, p.errs
	}
	return set, nil
}

// fileErr describes an os error about name.
func fileErr(name string, err error) *Error {
	msg := err.Error()
	var pe *fs.PathError
	if errors.As(err, &pe) {
		msg = pe.Err.Error() // the path is already in Error.File
	}
	return &Error{File: name, Msg: msg, Err: ErrInvalid, cause: err}
}

// readFile reads a regular file of at most limit bytes.
func readFile(name string, limit int) ([]byte, *Error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fileErr(name, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fileErr(name, err)
	}
	if !st.Mode().IsRegular() {
		return nil, &Error{File: name, Msg: "not a regular file", Err: ErrInvalid}
	}
	data, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err != nil {
		return nil, fileErr(name, err)
	}
	if len(data) > limit {
		return nil, &Error{File: name, Msg: fmt.Sprintf("file is larger than %d bytes, the limit", limit), Err: ErrTooLarge}
	}
	return data, nil
}
