package pki

import (
	"crypto/elliptic"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/bits"

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
// them anyway before it signs, so that each request pays for one parse
// and one signature verification. It reads the structure with cryptobyte,
// and of the public key only what the policy needs (algorithm, curve,
// modulus size): that the key itself is well formed (an EC point on its
// curve, a valid RSA exponent) is checked by cfssl's parse, which refuses
// such a CSR as malformed before signing. It agrees with crypto/x509 on
// everything it reads (see FuzzCheckCSRAgreesWithX509).
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
	if err := checkCSRKey(f.key); err != nil {
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
	key            keyFacts
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
	key, err := inspectSPKI(spki)
	if err != nil {
		return nil, err
	}
	f := &csrFacts{key: key}
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

func checkCSRKey(k keyFacts) error {
	switch k.alg {
	case x509.ECDSA:
		if k.curve != elliptic.P256() && k.curve != elliptic.P384() {
			return refuse(ReasonCSRKey, ErrBadCSR, "ECDSA curve %s not accepted; use P-256 or P-384", k.curve.Params().Name)
		}
	case x509.RSA:
		if k.rsaBits < 2048 || k.rsaBits > 8192 {
			return refuse(ReasonCSRKey, ErrBadCSR, "RSA key of %d bits not accepted; use 2048-8192", k.rsaBits)
		}
	default:
		return refuse(ReasonCSRKey, ErrBadCSR, "public key algorithm %s not accepted; use ECDSA or RSA", k.name)
	}
	return nil
}

// keyFacts is what the policy needs from a subjectPublicKeyInfo.
type keyFacts struct {
	alg     x509.PublicKeyAlgorithm
	curve   elliptic.Curve // ECDSA
	rsaBits int            // RSA: bit length of the modulus
	name    string         // algorithm named in a refusal
}

var (
	oidPublicKeyRSA     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidPublicKeyECDSA   = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidPublicKeyEd25519 = asn1.ObjectIdentifier{1, 3, 101, 112}
	oidPublicKeyX25519  = asn1.ObjectIdentifier{1, 3, 101, 110}
	oidPublicKeyDSA     = asn1.ObjectIdentifier{1, 2, 840, 10040, 4, 1}

	oidCurveP224 = asn1.ObjectIdentifier{1, 3, 132, 0, 33}
	oidCurveP256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
	oidCurveP384 = asn1.ObjectIdentifier{1, 3, 132, 0, 34}
	oidCurveP521 = asn1.ObjectIdentifier{1, 3, 132, 0, 35}
)

// inspectSPKI reads a DER subjectPublicKeyInfo (RFC 5280 4.1) as far as
// the policy needs: the algorithm, an EC key's named curve and point
// encoding, an RSA key's modulus size. It refuses the encodings
// crypto/x509 refuses for these algorithms (missing or wrong parameters,
// compressed or odd-sized points, a non-positive modulus) but does not
// check that an EC point lies on its curve: cfssl's crypto/x509 parse
// does, before anything is signed.
func inspectSPKI(der cryptobyte.String) (keyFacts, error) {
	var spki, algo cryptobyte.String
	var oid asn1.ObjectIdentifier
	var key asn1.BitString
	if !der.ReadASN1(&spki, cbasn1.SEQUENCE) || !der.Empty() ||
		!spki.ReadASN1(&algo, cbasn1.SEQUENCE) ||
		!spki.ReadASN1BitString(&key) || !spki.Empty() ||
		!algo.ReadASN1ObjectIdentifier(&oid) {
		return keyFacts{}, errors.New("malformed public key")
	}
	if key.BitLength%8 != 0 {
		return keyFacts{}, errors.New("public key is not a whole number of bytes")
	}
	params := algo
	switch {
	case oid.Equal(oidPublicKeyECDSA):
		var curveOID asn1.ObjectIdentifier
		if !params.ReadASN1ObjectIdentifier(&curveOID) || !params.Empty() {
			return keyFacts{}, errors.New("malformed ECDSA parameters")
		}
		var c elliptic.Curve
		switch {
		case curveOID.Equal(oidCurveP224):
			c = elliptic.P224()
		case curveOID.Equal(oidCurveP256):
			c = elliptic.P256()
		case curveOID.Equal(oidCurveP384):
			c = elliptic.P384()
		case curveOID.Equal(oidCurveP521):
			c = elliptic.P521()
		default:
			return keyFacts{}, errors.New("unsupported elliptic curve")
		}
		size := (c.Params().BitSize + 7) / 8
		if len(key.Bytes) != 1+2*size || key.Bytes[0] != 4 {
			return keyFacts{}, errors.New("failed to unmarshal elliptic curve point")
		}
		return keyFacts{alg: x509.ECDSA, curve: c, name: "ECDSA"}, nil
	case oid.Equal(oidPublicKeyRSA):
		// RFC 3279 2.3.1: the parameters are NULL.
		var null cryptobyte.String
		if !params.ReadASN1(&null, cbasn1.NULL) || !null.Empty() || !params.Empty() {
			return keyFacts{}, errors.New("RSA key missing NULL parameters")
		}
		var pub, n cryptobyte.String
		var e int64
		in := cryptobyte.String(key.Bytes)
		if !in.ReadASN1(&pub, cbasn1.SEQUENCE) || !in.Empty() ||
			!pub.ReadASN1(&n, cbasn1.INTEGER) || !pub.ReadASN1Integer(&e) || !pub.Empty() {
			return keyFacts{}, errors.New("malformed RSA public key")
		}
		bits, ok := positiveIntBits(n)
		if !ok {
			return keyFacts{}, errors.New("RSA modulus is not a positive number")
		}
		if e <= 0 {
			return keyFacts{}, errors.New("RSA public exponent is not a positive number")
		}
		return keyFacts{alg: x509.RSA, rsaBits: bits, name: "RSA"}, nil
	case oid.Equal(oidPublicKeyEd25519):
		return keyFacts{alg: x509.Ed25519, name: "Ed25519"}, nil
	case oid.Equal(oidPublicKeyX25519):
		return keyFacts{name: "X25519"}, nil
	case oid.Equal(oidPublicKeyDSA):
		return keyFacts{alg: x509.DSA, name: "DSA"}, nil
	}
	return keyFacts{}, errors.New("unknown public key algorithm")
}

// positiveIntBits returns the bit length of a DER INTEGER's content if it
// is minimally encoded and positive.
func positiveIntBits(n []byte) (int, bool) {
	if len(n) == 0 || n[0]&0x80 != 0 {
		return 0, false // empty or negative
	}
	if len(n) > 1 && n[0] == 0 && n[1]&0x80 == 0 {
		return 0, false // not minimal
	}
	for len(n) > 0 && n[0] == 0 {
		n = n[1:]
	}
	if len(n) == 0 {
		return 0, false // zero
	}
	return (len(n)-1)*8 + bits.Len8(n[0]), true
}
