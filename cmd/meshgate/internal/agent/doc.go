// Package agent assembles one meshgate node: it loads the Istio resources,
// builds the SNI route table, runs the proxy listeners and the admin
// listener, and reloads on SIGHUP or when the resource files change.
//
// The command line (cmd/meshgate) only parses flags and node.yaml into a
// Config and calls Run:
//
//	a, err := agent.New(cfg)
//	if err != nil { ... }
//	err = a.Run(ctx) // returns after ctx is done and connections drained
package agent
