package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

var (
	// oidBasicConstraints is id-ce-basicConstraints (RFC 5280 4.2.1.9).
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	// oidSubjectAltName is id-ce-subjectAltName (RFC 5280 4.2.1.6).
	oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}
	// oidExtensionRequest is PKCS #9 extensionRequest (RFC 2985 5.4.2).
	oidExtensionRequest = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 14}
)

// CSR is a parsed, checked certificate signing request.
type CSR struct {
	// PEM is the request as received.
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
	c, der, err := checkCSR(data, maxBytes)
	if err != nil {
		return nil, err
	}
	req, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, refuse(ReasonCSRMalformed, ErrBadCSR, "%v", err)
	}
	if err := req.CheckSignature(); err != nil {
		return nil, refuse(ReasonCSRSignature, ErrBadCSR, "CSR signature does not verify: %v", err)
	}
	c.Request = req
	return c, nil
}

// checkCSR applies the CA's CSR policy without crypto/x509's full parse or
// the signature check: the issuing path leaves both to cfssl, which does
// them anyway, so that each request pays for one parse and one signature
// verification. It reads the structure with cryptobyte and the public
// key with x509.ParsePKIXPublicKey (the parser cfssl's copy of the key
// comes from). It is at least as strict as crypto/x509 where the two
// overlap (see FuzzCheckCSRAgreesWithX509).
func checkCSR(data []byte, maxBytes int) (*CSR, []byte, error) {
	if len(data) > maxBytes {
		return nil, nil, refuse(ReasonCSRTooLarge, ErrBadCSR, "CSR is %d bytes, limit %d", len(data), maxBytes)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, nil, refuse(ReasonCSRMalformed, ErrBadCSR, "no PEM block")
	}
	if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
		return nil, nil, refuse(ReasonCSRMalformed, ErrBadCSR, "PEM block is %q, want CERTIFICATE REQUEST", block.Type)
	}
	f, err := inspectCSR(block.Bytes)
	if err != nil {
		return nil, nil, refuse(ReasonCSRMalformed, ErrBadCSR, "%v", err)
	}
	if err := checkCSRKey(f.pub); err != nil {
		return nil, nil, err
	}
	if f.isCA {
		return nil, nil, refuse(ReasonCSRIsCA, ErrBadCSR, "CSR asks for CA:true; only leaf certificates are issued")
	}
	if f.dns+f.ip+f.email+f.otherNames > 0 {
		return nil, nil, refuse(ReasonExtraSAN, ErrPermissionDenied, "CSR has DNS, IP, e-mail or other SANs; workload certificates carry only the SPIFFE URI")
	}
	c := &CSR{PEM: data}
	switch len(f.uris) {
	case 0:
	case 1:
		id, err := ParseIdentity(f.uris[0])
		if err != nil {
			return nil, nil, refuse(ReasonIdentityMismatch, ErrPermissionDenied, "CSR URI SAN: %v", err)
		}
		c.Identity = id
	default:
		return nil, nil, refuse(ReasonExtraSAN, ErrPermissionDenied, "CSR has %d URI SANs; want at most one", len(f.uris))
	}
	return c, block.Bytes, nil
}

// csrFacts is what the policy needs from a CSR.
type csrFacts struct {
	pub            crypto.PublicKey
	isCA           bool
	dns, ip, email int
	uris           []string
	otherNames     int
}

var errCSRStructure = errors.New("malformed certificate request")

// inspectCSR walks a DER PKCS #10 request (RFC 2986). Extensions are read
// from the first value of each extensionRequest attribute, as crypto/x509
// does; when several SAN extensions are present the last one counts (as
// in crypto/x509), and any basicConstraints with cA set counts.
func inspectCSR(der []byte) (*csrFacts, error) {
	in := cryptobyte.String(der)
	var csr, info, sigAlg cryptobyte.String
	var sig asn1.BitString
	if !in.ReadASN1(&csr, cbasn1.SEQUENCE) || !in.Empty() ||
		!csr.ReadASN1(&info, cbasn1.SEQUENCE) ||
		!csr.ReadASN1(&sigAlg, cbasn1.SEQUENCE) ||
		!csr.ReadASN1BitString(&sig) || !csr.Empty() {
		return nil, errCSRStructure
	}
	var version int64
	var spki, attrs cryptobyte.String
	if !info.ReadASN1Integer(&version) ||
		!info.SkipASN1(cbasn1.SEQUENCE) || // subject: ignored, the CA sets none
		!info.ReadASN1Element(&spki, cbasn1.SEQUENCE) ||
		!info.ReadASN1(&attrs, cbasn1.Tag(0).Constructed().ContextSpecific()) ||
		!info.Empty() {
		return nil, errCSRStructure
	}
	pub, err := x509.ParsePKIXPublicKey(spki)
	if err != nil {
		return nil, err
	}
	f := &csrFacts{pub: pub}
	for !attrs.Empty() {
		var attr, values, exts cryptobyte.String
		var oid asn1.ObjectIdentifier
		if !attrs.ReadASN1(&attr, cbasn1.SEQUENCE) || !attr.ReadASN1ObjectIdentifier(&oid) ||
			!attr.ReadASN1(&values, cbasn1.SET) || !attr.Empty() {
			return nil, errCSRStructure
		}
		if !oid.Equal(oidExtensionRequest) {
			continue
		}
		if !values.ReadASN1(&exts, cbasn1.SEQUENCE) {
			return nil, errCSRStructure
		}
		for !exts.Empty() {
			var ext, value cryptobyte.String
			var id asn1.ObjectIdentifier
			var critical bool
			if !exts.ReadASN1(&ext, cbasn1.SEQUENCE) || !ext.ReadASN1ObjectIdentifier(&id) ||
				!readOptionalBool(&ext, &critical) ||
				!ext.ReadASN1(&value, cbasn1.OCTET_STRING) || !ext.Empty() {
				return nil, errCSRStructure
			}
			switch {
			case id.Equal(oidSubjectAltName):
				if err := f.readSAN(value); err != nil {
					return nil, err
				}
			case id.Equal(oidBasicConstraints):
				var bc cryptobyte.String
				var isCA bool
				if !value.ReadASN1(&bc, cbasn1.SEQUENCE) || !value.Empty() ||
					!readOptionalBool(&bc, &isCA) {
					return nil, errors.New("malformed basicConstraints extension")
				}
				if bc.PeekASN1Tag(cbasn1.INTEGER) {
					var n int64
					if !bc.ReadASN1Integer(&n) {
						return nil, errors.New("malformed basicConstraints extension")
					}
				}
				if !bc.Empty() {
					return nil, errors.New("malformed basicConstraints extension")
				}
				f.isCA = f.isCA || isCA
			}
		}
	}
	return f, nil
}

// readOptionalBool reads a BOOLEAN if one comes next (DEFAULT FALSE).
func readOptionalBool(s *cryptobyte.String, out *bool) bool {
	*out = false
	if !s.PeekASN1Tag(cbasn1.BOOLEAN) {
		return true
	}
	return s.ReadASN1Boolean(out)
}

// readSAN counts the names of a subjectAltName value; a later SAN
// extension replaces an earlier one.
func (f *csrFacts) readSAN(value cryptobyte.String) error {
	var names cryptobyte.String
	if !value.ReadASN1(&names, cbasn1.SEQUENCE) || !value.Empty() {
		return errors.New("malformed subjectAltName extension")
	}
	f.dns, f.ip, f.email, f.uris, f.otherNames = 0, 0, 0, nil, 0
	for !names.Empty() {
		var name cryptobyte.String
		var tag cbasn1.Tag
		if !names.ReadAnyASN1(&name, &tag) {
			return errors.New("malformed subjectAltName extension")
		}
		switch tag {
		case cbasn1.Tag(1).ContextSpecific():
			f.email++
		case cbasn1.Tag(2).ContextSpecific():
			f.dns++
		case cbasn1.Tag(6).ContextSpecific():
			f.uris = append(f.uris, string(name))
		case cbasn1.Tag(7).ContextSpecific():
			f.ip++
		default:
			f.otherNames++
		}
	}
	return nil
}

func checkCSRKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return refuse(ReasonCSRKey, ErrBadCSR, "ECDSA curve %s not accepted; use P-256 or P-384", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 || n > 8192 {
			return refuse(ReasonCSRKey, ErrBadCSR, "RSA key of %d bits not accepted; use 2048-8192", n)
		}
	default:
		return refuse(ReasonCSRKey, ErrBadCSR, "public key type %T not accepted; use ECDSA or RSA", pub)
	}
	return nil
}
