package sni

// tableIncState is the build context a table keeps so that an endpoint
// change can derive a new table from it (Builder.UpdateEndpoints).
type tableIncState struct{}

// tableServiceScratch is per-service state of one UpdateEndpoints diff.
type tableServiceScratch struct {
	gen uint64
	fp  uint64
	n   int32
}
