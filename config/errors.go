package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Sentinel errors. Every *Error wraps exactly one of them, so callers can
// branch with errors.Is on a single *Error or on a whole Errors list.
var (
	// ErrSyntax means the input is not well-formed YAML (or not UTF-8).
	ErrSyntax = errors.New("config: malformed YAML")
	// ErrInvalid means a field has a value Istio's reference does not allow.
	ErrInvalid = errors.New("config: invalid value")
	// ErrUnsupported means the value is valid Istio but meshgate does not
	// implement it yet; it is refused rather than silently ignored.
	ErrUnsupported = errors.New("config: not supported yet")
	// ErrTooLarge means an input limit (file size, document count, nesting
	// depth, alias expansion) was exceeded.
	ErrTooLarge = errors.New("config: input too large")
	// ErrDuplicate means two resources share kind, namespace and name.
	ErrDuplicate = errors.New("config: duplicate resource")
)

// Error is one problem found in configuration input. It names where the
// problem is as precisely as is known: the file, the document, the resource
// and the field path.
//
// Error() renders it as
//
//	resources/gw.yaml: document 2 (Gateway default/eastwest): spec.servers[0].tls.mode: mode SIMPLE is not supported yet (supported: PASSTHROUGH, AUTO_PASSTHROUGH, ISTIO_MUTUAL)
//
// and leaves out the parts that are empty.
type Error struct {
	// File is the file the input came from ("" when it did not come from a
	// file; Error() then prints "config").
	File string
	// Index is the 1-based number of the YAML document within File, counting
	// every document (empty ones too) the way a reader counts "---"
	// separators. 0 means the problem concerns the whole file.
	// Note that Meta.Index is 0-based: Meta.Index == Error.Index-1.
	Index int
	// Kind is the resource kind, when it is known.
	Kind Kind
	// Name is "namespace/name" of the resource, when it is known.
	Name string
	// Field is the path of the offending field, e.g.
	// "spec.servers[0].tls.mode" or "metadata.name"; "" when the problem is
	// not about one field (a YAML syntax error, a duplicate resource).
	Field string
	// Msg says what is wrong, in words meant for the person who wrote the
	// file.
	Msg string
	// Err is the category: ErrSyntax, ErrInvalid, ErrUnsupported,
	// ErrTooLarge or ErrDuplicate. Unwrap returns it.
	Err error

	// cause is the error behind a file problem (an *fs.PathError...).
	cause error
}

// Error implements error.
func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
	} else {
		b.WriteString("config")
	}
	if e.Index > 0 {
		b.WriteString(": document ")
		b.WriteString(strconv.Itoa(e.Index))
	}
	if e.Kind != "" || e.Name != "" {
		if e.Index == 0 {
			b.WriteString(":")
		}
		b.WriteString(" (")
		b.WriteString(string(e.Kind))
		if e.Name != "" {
			if e.Kind != "" {
				b.WriteString(" ")
			}
			b.WriteString(e.Name)
		}
		b.WriteString(")")
	}
	if e.Field != "" {
		b.WriteString(": ")
		b.WriteString(e.Field)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap returns the category sentinel (ErrInvalid, ErrUnsupported...)
// and, for a file that could not be read, the os error as well, so
// errors.Is(err, fs.ErrNotExist) works.
func (e *Error) Unwrap() []error {
	if e.cause != nil {
		return []error{e.Err, e.cause}
	}
	return []error{e.Err}
}

// Errors is every problem found in one Parse, Load, Merge or Validate call,
// in input order. A nil or empty Errors is never returned as an error.
type Errors []*Error

// Error joins every problem, one per line.
func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap returns the problems, so errors.Is(err, ErrUnsupported) and
// errors.As(err, &e) (with e *Error) look at each of them.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// maxErrors caps how many problems one call collects, so hostile input
// cannot make the error list itself huge.
const maxErrors = 1000

// where is the location part shared by every problem of one document.
type where struct {
	file  string
	index int
	kind  Kind
	name  string
}

// collector gathers problems for one document or one resource.
type collector struct {
	at   where
	errs *Errors
}

func (c *collector) add(sentinel error, field, format string, args ...any) {
	if len(*c.errs) >= maxErrors {
		return
	}
	msg := format
	if len(args) > 0 {
		msg = fmt.Sprintf(format, args...)
	}
	if len(*c.errs) == maxErrors-1 {
		sentinel, field, msg = ErrTooLarge, "", fmt.Sprintf("too many problems; stopped after %d", maxErrors-1)
	}
	*c.errs = append(*c.errs, &Error{
		File:  c.at.file,
		Index: c.at.index,
		Kind:  c.at.kind,
		Name:  c.at.name,
		Field: field,
		Msg:   msg,
		Err:   sentinel,
	})
}

func (c *collector) invalid(field, format string, args ...any) {
	c.add(ErrInvalid, field, format, args...)
}

func (c *collector) unsupported(field, format string, args ...any) {
	c.add(ErrUnsupported, field, format, args...)
}

func (c *collector) full() bool { return len(*c.errs) >= maxErrors }

// errOrNil returns es as an error, or nil when it is empty (avoiding the
// typed-nil interface trap).
func (es Errors) errOrNil() error {
	if len(es) == 0 {
		return nil
	}
	return es
}
