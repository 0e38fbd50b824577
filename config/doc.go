// Package config reads the Istio networking resources meshgate routes by
// (Gateway, VirtualService, DestinationRule, ServiceEntry, WorkloadEntry)
// from multi-document YAML into istio.io/api types, and validates them.
//
// A file that has any error is refused whole; the error names the file, the
// document index, the kind/name of the resource and the field path:
//
//	set, err := config.Load("resources/")
//	if err != nil {
//		fmt.Fprintln(os.Stderr, err) // every problem, one per line
//		os.Exit(1)
//	}
//	for _, gw := range set.Gateways { ... }
package config
