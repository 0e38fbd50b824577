// Package config reads the Istio networking resources meshgate routes by
// (Gateway, VirtualService, DestinationRule, ServiceEntry, WorkloadEntry)
// from multi-document YAML into istio.io/api types, and validates them; and
// it reads a node's own settings (node.yaml) into a Node.
//
// A file that has any error is refused whole; the error names the file, the
// document index, the kind/name of the resource and the field path, and
// every problem is reported, one per line:
//
//	set, err := config.Load("resources/")
//	if err != nil {
//		fmt.Fprintln(os.Stderr, err) // every problem, one per line
//		os.Exit(1)
//	}
//	for _, gw := range set.Gateways { ... }
//
// An error looks like
//
//	resources/gw.yaml: document 2 (Gateway default/eastwest): spec.servers[0].tls.mode: mode SIMPLE is not supported yet (supported: PASSTHROUGH, AUTO_PASSTHROUGH, ISTIO_MUTUAL)
//
// and is an Errors value holding one *Error per problem; errors.Is tells
// the categories apart (ErrSyntax, ErrInvalid, ErrUnsupported, ErrTooLarge,
// ErrDuplicate).
//
// # Reading resources
//
// Each document needs apiVersion networking.istio.io/v1, v1beta1 or
// v1alpha3, a kind, metadata (name; namespace, default "default"; labels)
// and spec. Top-level keys other than those and status are errors, and so
// are unknown spec fields. Fields mean what Istio's reference says;
// durations are written as Istio accepts them ("5s", "1m30s", "250ms").
// Valid Istio settings meshgate does not implement yet are refused with
// ErrUnsupported rather than ignored. Input is bounded: MaxFileBytes per
// file, MaxDocuments per file, MaxDepth of nesting, MaxExpandedBytes after
// YAML aliases are expanded, MaxFiles per folder.
//
// # Using a Set
//
// A Set is immutable once built and safe to share between goroutines. Its
// helpers answer the questions routing asks: Gateway, VirtualServicesFor,
// DestinationRuleFor (Istio's lookup order), WorkloadEntriesFor, and
// Kinds, Hash (to tell whether configuration changed), Merge (combine
// sources, refusing duplicates) and YAML (render back; Parse reads it into
// an equal Set).
//
// # Node settings
//
// ParseNode and LoadNode read node.yaml (snake_case keys) over DefaultNode;
// every field and its default is documented on Node.
package config
