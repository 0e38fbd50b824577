package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
)

// oidBasicConstraints is id-ce-basicConstraints (RFC 5280 4.2.1.9).
var oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}

// CSR is a parsed, checked certificate signing request.
type CSR struct {
	// PEM is the request as received (a single PEM block).
	PEM []byte
	// Request is the parsed request.
	Request *x509.CertificateRequest
	// Identity is the SPIFFE identity the CSR's single URI SAN names, or
	// the zero Identity when the CSR has no SAN. The CA never takes the
	// identity from here; it only refuses a CSR that names another one.
	Identity Identity
}

// ParseCSR decodes a PEM certificate signing request and applies every
// check the CA applies before signing: size (maxBytes), PEM type, DER,
// signature, key type and size (ECDSA P-256/P-384, RSA 2048-8192 bits),
// no CA:true basic constraint, and SANs (none, or exactly one SPIFFE URI
// of an Istio identity: no DNS, IP or e-mail SAN). Errors are
// *RefusalError wrapping ErrBadCSR or ErrPermissionDenied.
func ParseCSR(data []byte, maxBytes int) (*CSR, error) {
	return parseCSR(data, maxBytes, true)
}

// parseCSR is ParseCSR with the signature check optional: the issuing
// path leaves it to cfssl, which checks it anyway, so that each request
// pays for one signature verification only.
func parseCSR(data []byte, maxBytes int, checkSig bool) (*CSR, error) {
	if len(data) > maxBytes {
		return nil, refuse(ReasonCSRTooLarge, ErrBadCSR, "CSR is %d bytes, limit %d", len(data), maxBytes)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, refuse(ReasonCSRMalformed, ErrBadCSR, "no PEM block")
	}
	if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
		return nil, refuse(ReasonCSRMalformed, ErrBadCSR, "PEM block is %q, want CERTIFICATE REQUEST", block.Type)
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, refuse(ReasonCSRMalformed, ErrBadCSR, "%v", err)
	}
	if err := checkCSRKey(req); err != nil {
		return nil, err
	}
	for _, ext := range req.Extensions {
		if ext.Id.Equal(oidBasicConstraints) {
			var bc struct {
				IsCA       bool `asn1:"optional"`
				MaxPathLen int  `asn1:"optional,default:-1"`
			}
			rest, err := asn1.Unmarshal(ext.Value, &bc)
			if err != nil || len(rest) != 0 {
				return nil, refuse(ReasonCSRMalformed, ErrBadCSR, "malformed basicConstraints extension")
			}
			if bc.IsCA {
				return nil, refuse(ReasonCSRIsCA, ErrBadCSR, "CSR asks for CA:true; only leaf certificates are issued")
			}
		}
	}
	if len(req.DNSNames) > 0 || len(req.IPAddresses) > 0 || len(req.EmailAddresses) > 0 {
		return nil, refuse(ReasonExtraSAN, ErrPermissionDenied, "CSR has DNS, IP or e-mail SANs; workload certificates carry only the SPIFFE URI")
	}
	c := &CSR{PEM: data, Request: req}
	switch len(req.URIs) {
	case 0:
	case 1:
		id, err := IdentityFromURL(req.URIs[0])
		if err != nil {
			return nil, refuse(ReasonIdentityMismatch, ErrPermissionDenied, "CSR URI SAN: %v", err)
		}
		c.Identity = id
	default:
		return nil, refuse(ReasonExtraSAN, ErrPermissionDenied, "CSR has %d URI SANs; want at most one", len(req.URIs))
	}
	if checkSig {
		if err := req.CheckSignature(); err != nil {
			return nil, refuse(ReasonCSRSignature, ErrBadCSR, "CSR signature does not verify: %v", err)
		}
	}
	return c, nil
}

func checkCSRKey(req *x509.CertificateRequest) error {
	switch k := req.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return refuse(ReasonCSRKey, ErrBadCSR, "ECDSA curve %s not accepted; use P-256 or P-384", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 || n > 8192 {
			return refuse(ReasonCSRKey, ErrBadCSR, "RSA key of %d bits not accepted; use 2048-8192", n)
		}
	default:
		return refuse(ReasonCSRKey, ErrBadCSR, "public key type %v not accepted; use ECDSA or RSA", req.PublicKeyAlgorithm)
	}
	return nil
}
