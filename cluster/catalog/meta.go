package catalog

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"

	"github.com/hashicorp/memberlist"
)

// ProtocolVersion is the catalog protocol this build speaks. Peers with a
// different major protocol are refused at join. Version 2 signs every
// record with the owner's node key.
const ProtocolVersion = 2

// Meta flags.
const (
	// FlagRaftReady: the node belongs to a raft configuration (bootstrapped
	// or joined). A node that sees one never bootstraps a new cluster.
	FlagRaftReady uint8 = 1 << 0
	// FlagEndpoints: the node publishes at least one endpoint. Peers fetch
	// its full state when they meet it; set by the catalog itself.
	FlagEndpoints uint8 = 1 << 1
)

// Meta is what a node tells every peer about itself through memberlist's
// node meta (at most memberlist.MetaMaxSize = 512 bytes encoded).
type Meta struct {
	ProtocolVersion uint8
	ClusterID       string
	Network         string
	// GatewayAddr is where other networks reach this node's gateway
	// ("host:port"); "" if the node is not a cross-network gateway.
	GatewayAddr string
	// BridgeAddr is where other networks' gateways open bridge tunnels
	// to this node ("host:port", gossiped as bridge_addr); "" if none.
	// It follows Flags on the wire, so peers that predate it ignore it
	// and their meta decodes with BridgeAddr "".
	BridgeAddr string
	// RaftAddr is the node's raft/RPC address ("host:port"); "" if none.
	RaftAddr string
	// LabelsDigest summarizes the node's labels (LabelsDigest).
	LabelsDigest uint64
	Flags        uint8
}

// metaFormat is the first byte of encoded meta.
const metaFormat byte = 'm'

// Encode returns the wire form of m, or ErrMetaTooLarge.
//
//	'm' protocol clusterID network gatewayAddr raftAddr labelsDigest(8, BE) flags [bridgeAddr]
//
// Decoders ignore bytes after the fields they know, so later versions may
// append fields. bridgeAddr came after flags: meta from a peer that
// predates it ends at flags and decodes with BridgeAddr "".
func (m Meta) Encode() ([]byte, error) {
	b := []byte{metaFormat, m.ProtocolVersion}
	b = appendString(b, m.ClusterID)
	b = appendString(b, m.Network)
	b = appendString(b, m.GatewayAddr)
	b = appendString(b, m.RaftAddr)
	b = binary.BigEndian.AppendUint64(b, m.LabelsDigest)
	b = append(b, m.Flags)
	b = appendString(b, m.BridgeAddr)
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrMetaTooLarge, len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

// DecodeMeta parses node meta received from a peer.
func DecodeMeta(b []byte) (Meta, error) {
	if len(b) > memberlist.MetaMaxSize {
		return Meta{}, fmt.Errorf("%w: %d bytes", ErrMetaTooLarge, len(b))
	}
	d := &decoder{b: b}
	var m Meta
	if f := d.byte(); d.err == nil && f != metaFormat {
		d.fail("unknown meta format 0x%02x", f)
	}
	m.ProtocolVersion = d.byte()
	m.ClusterID = d.str(maxNameLen)
	m.Network = d.str(MaxNetworkLen)
	m.GatewayAddr = d.str(MaxAddrLen)
	m.RaftAddr = d.str(MaxAddrLen)
	if d.err == nil && len(d.b) < 8 {
		d.fail("truncated labels digest")
	}
	if d.err == nil {
		m.LabelsDigest = binary.BigEndian.Uint64(d.b[:8])
		d.b = d.b[8:]
	}
	m.Flags = d.byte()
	if d.err == nil && len(d.b) > 0 {
		m.BridgeAddr = d.str(MaxAddrLen)
	}
	if d.err != nil {
		return Meta{}, fmt.Errorf("%w: meta: %w", ErrBadMessage, d.err)
	}
	return m, nil
}

// LabelsDigest is a stable 64-bit FNV-1a digest of labels, independent of
// map order.
func LabelsDigest(labels map[string]string) uint64 {
	h := fnv.New64a()
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		h.Write([]byte(k))
		h.Write([]byte{0})
		h.Write([]byte(labels[k]))
		h.Write([]byte{0})
	}
	return h.Sum64()
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
