package config

import (
	networking "istio.io/api/networking/v1alpha3"
)

// Kind names one of the Istio resource kinds meshgate reads.
type Kind string

// The resource kinds of networking.istio.io that meshgate understands.
const (
	KindGateway         Kind = "Gateway"
	KindVirtualService  Kind = "VirtualService"
	KindDestinationRule Kind = "DestinationRule"
	KindServiceEntry    Kind = "ServiceEntry"
	KindWorkloadEntry   Kind = "WorkloadEntry"
)

// DefaultNamespace is the namespace of a resource whose metadata names none.
const DefaultNamespace = "default"

// Meta is the part of a resource's metadata meshgate keeps, plus where the
// resource came from so errors can point at it.
type Meta struct {
	Name      string
	Namespace string
	Labels    map[string]string
	// Source is the file the resource was read from ("" when it arrived by API).
	Source string
	// Index is the 0-based position of the document within Source.
	Index int
}

// Gateway is a parsed networking.istio.io Gateway.
type Gateway struct {
	Meta
	Spec *networking.Gateway
}

// VirtualService is a parsed networking.istio.io VirtualService.
type VirtualService struct {
	Meta
	Spec *networking.VirtualService
}

// DestinationRule is a parsed networking.istio.io DestinationRule.
type DestinationRule struct {
	Meta
	Spec *networking.DestinationRule
}

// ServiceEntry is a parsed networking.istio.io ServiceEntry.
type ServiceEntry struct {
	Meta
	Spec *networking.ServiceEntry
}

// WorkloadEntry is a parsed networking.istio.io WorkloadEntry.
type WorkloadEntry struct {
	Meta
	Spec *networking.WorkloadEntry
}

// Set is one complete, validated configuration: every resource meshgate
// routes by. A Set is immutable once returned by Load or Parse; callers
// share it freely between goroutines and never modify it.
type Set struct {
	Gateways         []*Gateway
	VirtualServices  []*VirtualService
	DestinationRules []*DestinationRule
	ServiceEntries   []*ServiceEntry
	WorkloadEntries  []*WorkloadEntry
}
