package nodeid

import "errors"

// ErrConfig: the node cannot get a certificate with the configuration it
// was given (no identity, no kept certificate and no join token, a token
// without the CA address or root file).
var ErrConfig = errors.New("nodeid: configuration")
