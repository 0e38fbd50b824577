package catalog

// DecodeStateFile exposes the registrations-file decoder to tests.
func DecodeStateFile(b []byte) ([]Registration, error) {
	entries, err := decodeStateFile(b)
	out := make([]Registration, 0, len(entries))
	for _, e := range entries {
		out = append(out, e.Registration)
	}
	return out, err
}
