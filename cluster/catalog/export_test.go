package catalog

// DecodeStateFile exposes the registration-file decoder to tests.
func DecodeStateFile(b []byte) (Registration, error) {
	f, err := decodeStateFile(b)
	return f.Registration, err
}

// StateFileName exposes the file name of a registration to tests.
func StateFileName(id string) string { return stateFileName(id) }
