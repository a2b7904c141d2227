// Package pki makes throwaway X.509 material: a local certificate authority,
// TLS server certificates for loopback, and client certificates shaped like
// Apple's push certificates (bundle id in the subject UID, topics in Apple's
// extension). It is used by the APNs stand-in, the demo and the tests; it is
// never used to talk to Apple.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// OIDUserID is the subject attribute (UID, 0.9.2342.19200300.100.1.1) in which
// Apple puts the bundle id of a push certificate.
var OIDUserID = asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1}

// OIDAppleTopics is Apple's extension listing the topics a multi-topic push
// certificate may send to.
var OIDAppleTopics = asn1.ObjectIdentifier{1, 2, 840, 113635, 100, 6, 3, 6}

// OIDAppleDevelopment and OIDAppleProduction mark an Apple push certificate
// as valid for the sandbox or the production environment.
var (
	OIDAppleDevelopment = asn1.ObjectIdentifier{1, 2, 840, 113635, 100, 6, 3, 1}
	OIDAppleProduction  = asn1.ObjectIdentifier{1, 2, 840, 113635, 100, 6, 3, 2}
)

// CA is a certificate authority that can issue certificates.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// CertPEM is Cert in PEM form.
	CertPEM []byte
}

// Issued is a certificate with its private key, in parsed and PEM forms.
type Issued struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte // PKCS#8 for ECDSA, PKCS#1 ("RSA PRIVATE KEY") for RSA, as openssl gives it
}

// TLSCertificate returns the pair as a tls.Certificate with Leaf set.
func (i *Issued) TLSCertificate() tls.Certificate {
	c, err := tls.X509KeyPair(i.CertPEM, i.KeyPEM)
	if err != nil {
		panic(fmt.Sprintf("pki: own key pair does not load: %v", err))
	}
	return c
}

// WriteFiles writes the certificate and key as PEM to certPath and keyPath
// (mode 0644 and 0600). If keyPath is empty, both go into certPath, the
// "combined PEM" form.
func (i *Issued) WriteFiles(certPath, keyPath string) error {
	if keyPath == "" {
		return writeFile(certPath, append(append([]byte{}, i.CertPEM...), i.KeyPEM...), 0o600)
	}
	if err := writeFile(certPath, i.CertPEM, 0o644); err != nil {
		return err
	}
	return writeFile(keyPath, i.KeyPEM, 0o600)
}

func writeFile(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, data, mode)
}

// NewCA makes a self-signed ECDSA P-256 certificate authority.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"apnsd throwaway"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, CertPEM: pemBlock("CERTIFICATE", der)}, nil
}

// Pool returns a cert pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// ServerCert issues a TLS server certificate for localhost, 127.0.0.1 and ::1
// plus any extra DNS names given.
func (ca *CA) ServerCert(dnsNames ...string) (*Issued, error) {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    append([]string{"localhost"}, dnsNames...),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	return ca.issue(tmpl, false, time.Now().Add(-time.Hour), time.Now().Add(365*24*time.Hour))
}

// PushCertOptions shapes a client certificate like an Apple push certificate.
type PushCertOptions struct {
	// Topic is the bundle id put in the subject UID (required).
	Topic string
	// Topics, when set, are written into Apple's topics extension
	// (a multi-topic certificate).
	Topics []string
	// Production marks the certificate for production; otherwise development.
	Production bool
	// NotBefore and NotAfter default to one hour ago and one year from now.
	NotBefore, NotAfter time.Time
	// RSA makes an RSA-2048 key (as Apple's certificates have) instead of ECDSA P-256.
	RSA bool
}

// PushCert issues a client certificate shaped like Apple's "Apple Push
// Services" certificates.
func (ca *CA) PushCert(o PushCertOptions) (*Issued, error) {
	if o.Topic == "" {
		return nil, fmt.Errorf("pki: PushCert needs a topic")
	}
	env := "Apple Development IOS Push Services"
	envOID := OIDAppleDevelopment
	if o.Production {
		env = "Apple Push Services"
		envOID = OIDAppleProduction
	}
	tmpl := &x509.Certificate{
		Subject: pkix.Name{
			CommonName:         env + ": " + o.Topic,
			OrganizationalUnit: []string{"ABCDE12345"},
			Organization:       []string{"apnsd throwaway"},
			Country:            []string{"US"},
			ExtraNames:         []pkix.AttributeTypeAndValue{{Type: OIDUserID, Value: o.Topic}},
		},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: envOID, Value: []byte{0x05, 0x00}})
	if len(o.Topics) > 0 {
		ext, err := MarshalTopics(o.Topics)
		if err != nil {
			return nil, err
		}
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: OIDAppleTopics, Value: ext})
	}
	nb, na := o.NotBefore, o.NotAfter
	if nb.IsZero() {
		nb = time.Now().Add(-time.Hour)
	}
	if na.IsZero() {
		na = time.Now().Add(365 * 24 * time.Hour)
	}
	return ca.issue(tmpl, o.RSA, nb, na)
}

// MarshalTopics encodes topics the way Apple's topics extension does: a
// SEQUENCE of (UTF8String topic, SEQUENCE of UTF8String flags) pairs flattened
// into one sequence. Apple's real certificates list each topic followed by a
// sequence naming its kind ("app", "voip", "complication"); the decoder in
// internal/apns accepts both this and a plain list of strings.
func MarshalTopics(topics []string) ([]byte, error) {
	var elems []asn1.RawValue
	for _, t := range topics {
		s, err := asn1.MarshalWithParams(t, "utf8")
		if err != nil {
			return nil, err
		}
		elems = append(elems, asn1.RawValue{FullBytes: s})
		kind, err := asn1.Marshal([]asn1.RawValue{{Tag: asn1.TagUTF8String, Bytes: []byte("app")}})
		if err != nil {
			return nil, err
		}
		elems = append(elems, asn1.RawValue{FullBytes: kind})
	}
	return asn1.Marshal(elems)
}

func (ca *CA) issue(tmpl *x509.Certificate, useRSA bool, notBefore, notAfter time.Time) (*Issued, error) {
	var key crypto.Signer
	var keyPEM []byte
	if useRSA {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, err
		}
		key = k
		keyPEM = pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k))
	} else {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, err
		}
		key = k
		keyPEM = pemBlock("PRIVATE KEY", der)
	}
	tmpl.SerialNumber = serial()
	tmpl.NotBefore = notBefore
	tmpl.NotAfter = notAfter
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Issued{Cert: cert, Key: key, CertPEM: pemBlock("CERTIFICATE", der), KeyPEM: keyPEM}, nil
}

// NewP8Key makes an ECDSA P-256 key in the PKCS#8 PEM form of Apple's .p8
// token-auth keys ("-----BEGIN PRIVATE KEY-----").
func NewP8Key() (*ecdsa.PrivateKey, []byte, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, nil, err
	}
	return k, pemBlock("PRIVATE KEY", der), nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		panic(err)
	}
	return n
}
