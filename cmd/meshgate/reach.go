package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// dialTimeout bounds how long the CLI waits to connect to a node.
const dialTimeout = 10 * time.Second

// unreachableError says, in one sentence, that the CLI could not connect
// to a node's API and which flag or variable points it elsewhere.
type unreachableError struct {
	api    string // "admin API", "certificate API"
	addr   string
	source string // where addr came from, "" for the flag or default
	reason string // "connection refused"
	hint   string // "--admin or MESHGATE_ADDR"
	err    error
}

func (e *unreachableError) Error() string {
	from := ""
	if e.source != "" {
		from = " (from " + e.source + ")"
	}
	return fmt.Sprintf("cannot reach the meshgate %s at %s%s: %s; is the node running? set %s", e.api, e.addr, from, e.reason, e.hint)
}

func (e *unreachableError) Unwrap() error { return e.err }

// endpoint is a node API the CLI connects to, for error messages.
type endpoint struct {
	api, addr, source, hint string
}

// adminEndpoint and caEndpoint name the two node APIs.
func adminEndpoint(addr, source string) endpoint {
	return endpoint{api: "admin API", addr: addr, source: source, hint: "--admin or " + envAddr}
}

func caEndpoint(addr, source string) endpoint {
	return endpoint{api: "certificate API", addr: addr, source: source, hint: "--ca-addr or " + envCAAddr}
}

// reach turns err, from a call to e, into an *unreachableError when the
// call failed because nothing could be connected to at e.addr; any other
// error is returned as it is. A gRPC "unavailable" hides the dial error,
// so the address is then dialled once more to learn whether it answers.
func (e endpoint) reach(err error) error {
	if err == nil {
		return nil
	}
	var u *unreachableError
	if errors.As(err, &u) {
		return err
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return e.unreachable(op, err)
	}
	if status.Code(err) == codes.Unavailable {
		c, derr := net.DialTimeout("tcp", e.addr, dialTimeout)
		if derr != nil {
			return e.unreachable(derr, err)
		}
		c.Close()
	}
	return err
}

func (e endpoint) unreachable(dialErr, err error) error {
	return &unreachableError{api: e.api, addr: e.addr, source: e.source, reason: dialReason(dialErr), hint: e.hint, err: err}
}

// dialReason is the short cause of a failed dial: "connection refused",
// "no such host", "i/o timeout".
func dialReason(err error) string {
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return "no such host " + dns.Name
	}
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err.Error()
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		if op.Timeout() {
			return "timed out"
		}
		return op.Err.Error()
	}
	return err.Error()
}
