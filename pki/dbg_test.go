package pki
import ("testing";"crypto/ecdsa";"crypto/elliptic";"crypto/rand";"crypto/x509";"crypto/x509/pkix";"encoding/asn1";"fmt")
func TestDbg(t *testing.T){
	k,_:=ecdsa.GenerateKey(elliptic.P256(),rand.Reader)
	v,_:=asn1.Marshal(struct{IsCA bool `asn1:"optional"`}{true})
	der,_:=x509.CreateCertificateRequest(rand.Reader,&x509.CertificateRequest{ExtraExtensions:[]pkix.Extension{{Id:oidBasicConstraints,Critical:true,Value:v}}},k)
	fmt.Printf("%x\n", v)
	_,err:=inspectCSR(der); fmt.Println(err)
}
