package apns

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"software.sslmate.com/src/go-pkcs12"
)

// Sentinel errors for credential problems. Every error returned by
// LoadCertificate or LoadTokenKey is a *CredentialError that matches
// exactly one of these with errors.Is; its message names the file and the
// problem and never contains key material.
var (
	// ErrCertFiles: the CertFiles combination itself is wrong (nothing
	// set, both a PEM and a .p12, a key file without a certificate, ...).
	ErrCertFiles = errors.New("invalid certificate file combination")
	// ErrUnreadable: a file could not be read. The *fs.PathError is also
	// in the chain, so errors.Is(err, fs.ErrNotExist) works.
	ErrUnreadable = errors.New("credential file unreadable")
	// ErrNoCertificate: no CERTIFICATE PEM block in the file.
	ErrNoCertificate = errors.New("no certificate found")
	// ErrBadCertificate: a CERTIFICATE block does not parse.
	ErrBadCertificate = errors.New("invalid certificate")
	// ErrNoKey: no private key PEM block in the file.
	ErrNoKey = errors.New("no private key found")
	// ErrBadKey: a private key block does not parse, is of an unsupported
	// type, or there is more than one.
	ErrBadKey = errors.New("invalid private key")
	// ErrEncryptedKey: the PEM private key is passphrase-encrypted.
	ErrEncryptedKey = errors.New("private key is encrypted")
	// ErrKeyMismatch: the private key belongs to none of the certificates.
	ErrKeyMismatch = errors.New("private key does not match certificate")
	// ErrCertExpired: now is after the certificate's NotAfter.
	ErrCertExpired = errors.New("certificate expired")
	// ErrCertNotYetValid: now is before the certificate's NotBefore.
	ErrCertNotYetValid = errors.New("certificate not yet valid")
	// ErrBadP12: the .p12 file does not decode.
	ErrBadP12 = errors.New("invalid PKCS#12 file")
	// ErrP12Password: the .p12 passphrase is wrong, or could not be
	// obtained (password file unreadable, environment variable unset).
	ErrP12Password = errors.New("PKCS#12 passphrase wrong or unavailable")

	// Token (.p8) keys; LoadTokenKey also uses ErrUnreadable and
	// ErrEncryptedKey.

	// ErrBadTokenKey: the file is not a usable .p8 signing key: not PEM,
	// no private key in it, not PKCS#8 (or SEC 1), not an EC key, not on
	// the P-256 curve, or more than one key.
	ErrBadTokenKey = errors.New("invalid token signing key")
	// ErrBadKeyID: the key id is not 10 characters of A-Z and 0-9.
	ErrBadKeyID = errors.New("invalid token key id")
	// ErrBadTeamID: the team id is not 10 characters of A-Z and 0-9.
	ErrBadTeamID = errors.New("invalid team id")
)

// CredentialError is a problem loading a credential. Error returns a message
// that names the file and the problem; it never contains key material or
// passphrases.
type CredentialError struct {
	// Path is the file at fault; "" when the CertFiles combination itself
	// is wrong.
	Path string
	// Kind is one of the Err* sentinels of this package.
	Kind error
	// Msg is the complete message.
	Msg string
	// Err is the underlying cause, if any.
	Err error
}

func (e *CredentialError) Error() string { return e.Msg }

// Unwrap returns Kind and, when set, Err.
func (e *CredentialError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

func credErr(path string, kind, cause error, format string, args ...any) *CredentialError {
	return &CredentialError{Path: path, Kind: kind, Err: cause, Msg: fmt.Sprintf(format, args...)}
}

// CertFiles names where a certificate credential lives. Exactly one form:
//
//   - CertFile + KeyFile: separate PEM files (what a Keychain export
//     converted with openssl gives);
//   - CertFile alone: a combined PEM holding the certificate(s) and the key,
//     in any order;
//   - P12File: a PKCS#12 file, with its passphrase read from
//     P12PasswordFile (one trailing newline is removed) or from the
//     environment variable named P12PasswordEnv; with neither, the
//     passphrase is empty.
type CertFiles struct {
	CertFile        string
	KeyFile         string
	P12File         string
	P12PasswordFile string
	P12PasswordEnv  string
}

// Paths returns every file involved, for a watcher that reloads on change.
func (f CertFiles) Paths() []string {
	var p []string
	for _, s := range []string{f.CertFile, f.KeyFile, f.P12File, f.P12PasswordFile} {
		if s != "" && !slices.Contains(p, s) {
			p = append(p, s)
		}
	}
	return p
}

// keyFiles returns the files that hold secrets: the private key (or the
// combined PEM), the .p12, and the passphrase file.
func (f CertFiles) keyFiles() []string {
	var p []string
	switch {
	case f.KeyFile != "":
		p = append(p, f.KeyFile)
	case f.CertFile != "":
		p = append(p, f.CertFile)
	}
	for _, s := range []string{f.P12File, f.P12PasswordFile} {
		if s != "" {
			p = append(p, s)
		}
	}
	return p
}

// check reports whether f is one of the allowed forms.
func (f CertFiles) check() error {
	bad := func(format string, args ...any) error {
		return credErr("", ErrCertFiles, nil, format, args...)
	}
	switch {
	case f.CertFile == "" && f.KeyFile == "" && f.P12File == "":
		return bad("no certificate given: set a certificate file (PEM) or a .p12 file")
	case f.P12File != "" && (f.CertFile != "" || f.KeyFile != ""):
		return bad("both a PEM certificate (%s) and a .p12 file (%s) are given; use one", firstNonEmpty(f.CertFile, f.KeyFile), f.P12File)
	case f.KeyFile != "" && f.CertFile == "":
		return bad("key file %s is given without a certificate file", f.KeyFile)
	case f.P12File == "" && (f.P12PasswordFile != "" || f.P12PasswordEnv != ""):
		return bad("a .p12 passphrase source is given but no .p12 file")
	case f.P12PasswordFile != "" && f.P12PasswordEnv != "":
		return bad("both a .p12 passphrase file (%s) and environment variable (%s) are given; use one", f.P12PasswordFile, f.P12PasswordEnv)
	}
	return nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// Certificate is a loaded, checked push certificate with its private key.
// It is immutable once returned; share it freely between goroutines.
type Certificate struct {
	// TLS is the certificate for tls.Config, with Leaf set and any chain
	// certificates the files held after the leaf.
	TLS tls.Certificate
	// Leaf is the push certificate itself.
	Leaf *x509.Certificate
	// Subject is the leaf's subject in a human form, CN and UID first:
	// "CN=Apple Push Services: com.example.app,UID=com.example.app,OU=...".
	Subject string
	// Topics are the bundle id from the subject UID followed by the topics
	// in Apple's extension 1.2.840.113635.100.6.3.6, without duplicates.
	Topics []string
	// Env is "sandbox", "production", "both", or "" from Apple's
	// environment OIDs 1.2.840.113635.100.6.3.1 (development) and .2
	// (production).
	Env string
	// NotBefore and NotAfter are the leaf's validity period.
	NotBefore, NotAfter time.Time
	// Fingerprint is the lowercase hex SHA-256 of the leaf's DER.
	Fingerprint string
	// LoadedAt is the now passed to LoadCertificate.
	LoadedAt time.Time
	// Source is where the certificate was loaded from.
	Source CertFiles

	uid string // bundle id from the subject UID
}

// Apple's push certificate OIDs.
var (
	oidUserID           = asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1}
	oidAppleTopics      = asn1.ObjectIdentifier{1, 2, 840, 113635, 100, 6, 3, 6}
	oidAppleDevelopment = asn1.ObjectIdentifier{1, 2, 840, 113635, 100, 6, 3, 1}
	oidAppleProduction  = asn1.ObjectIdentifier{1, 2, 840, 113635, 100, 6, 3, 2}
)

// TopicSuffixes are the suffixes Apple appends to a bundle id to form the
// topic of a special push type (VoIP, complication, ...).
var TopicSuffixes = []string{".voip", ".complication", ".pushkit.fileprovider", ".location-query", ".push-type.liveactivity", ".voip-ptt"}

// Covers reports whether the certificate may send to topic: topic is one of
// c.Topics, or the bundle id from the subject UID plus one of TopicSuffixes.
func (c *Certificate) Covers(topic string) bool {
	if topic == "" {
		return false
	}
	if slices.Contains(c.Topics, topic) {
		return true
	}
	if c.uid == "" {
		return false
	}
	for _, s := range TopicSuffixes {
		if topic == c.uid+s {
			return true
		}
	}
	return false
}

// LoadCertificate reads, parses and checks the credential f names at time
// now: the files must be readable and well-formed, the key must match a
// certificate, and now must be within the certificate's validity period.
// Every error is a *CredentialError naming the file; test its kind with
// errors.Is and the Err* sentinels. It only reads files and is safe to call
// concurrently.
func LoadCertificate(f CertFiles, now time.Time) (*Certificate, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	var (
		certs   []*x509.Certificate
		key     crypto.PrivateKey
		keyPath string
		err     error
	)
	if f.P12File != "" {
		certs, key, err = loadP12(f)
		keyPath = f.P12File
	} else {
		certs, key, keyPath, err = loadPEM(f)
	}
	if err != nil {
		return nil, err
	}

	// The leaf is the certificate the key belongs to; the rest is chain.
	leafIdx := -1
	for i, c := range certs {
		if publicKeysEqual(c.PublicKey, key) {
			leafIdx = i
			break
		}
	}
	if leafIdx < 0 {
		if keyPath == f.CertFile || keyPath == f.P12File {
			return nil, credErr(keyPath, ErrKeyMismatch, nil, "%s: the private key does not match the certificate in the same file", keyPath)
		}
		return nil, credErr(keyPath, ErrKeyMismatch, nil, "key %s does not match certificate %s", keyPath, f.CertFile)
	}
	leaf := certs[leafIdx]
	certPath := firstNonEmpty(f.CertFile, f.P12File)
	day := func(t time.Time) string { return t.UTC().Format("2006-01-02") }
	if now.Before(leaf.NotBefore) {
		return nil, credErr(certPath, ErrCertNotYetValid, nil, "certificate %s: not valid until %s (not_before %s; check the clock)", certPath, day(leaf.NotBefore), leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.After(leaf.NotAfter) {
		return nil, credErr(certPath, ErrCertExpired, nil, "certificate %s: expired on %s (not_after %s)", certPath, day(leaf.NotAfter), leaf.NotAfter.UTC().Format(time.RFC3339))
	}

	chain := [][]byte{leaf.Raw}
	for i, c := range certs {
		if i != leafIdx {
			chain = append(chain, c.Raw)
		}
	}
	sum := sha256.Sum256(leaf.Raw)
	c := &Certificate{
		TLS:         tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf},
		Leaf:        leaf,
		Subject:     humanSubject(leaf),
		Env:         certEnv(leaf),
		NotBefore:   leaf.NotBefore,
		NotAfter:    leaf.NotAfter,
		Fingerprint: hex.EncodeToString(sum[:]),
		LoadedAt:    now,
		Source:      f,
		uid:         subjectUID(leaf),
	}
	if c.uid != "" {
		c.Topics = append(c.Topics, c.uid)
	}
	for _, t := range extensionTopics(leaf) {
		if !slices.Contains(c.Topics, t) {
			c.Topics = append(c.Topics, t)
		}
	}
	return c, nil
}

func readCredFile(role, path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		reason := err
		var pe *fs.PathError
		if errors.As(err, &pe) {
			reason = pe.Err
		}
		return nil, credErr(path, ErrUnreadable, err, "%s %s: cannot read: %v", role, path, reason)
	}
	return data, nil
}

// loadPEM reads the PEM form(s) and returns the certificates, the key, and
// the path the key came from.
func loadPEM(f CertFiles) ([]*x509.Certificate, crypto.PrivateKey, string, error) {
	certData, err := readCredFile("certificate", f.CertFile)
	if err != nil {
		return nil, nil, "", err
	}
	certs, err := parseCertsPEM(f.CertFile, certData)
	if err != nil {
		return nil, nil, "", err
	}
	keyPath, keyData := f.CertFile, certData
	if f.KeyFile != "" {
		keyPath = f.KeyFile
		if keyData, err = readCredFile("key", f.KeyFile); err != nil {
			return nil, nil, "", err
		}
	}
	key, err := parseKeyPEM(keyPath, keyData, f.KeyFile == "")
	if err != nil {
		return nil, nil, "", err
	}
	return certs, key, keyPath, nil
}

func blockTypes(data []byte) []string {
	var types []string
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return types
		}
		if !slices.Contains(types, b.Type) {
			types = append(types, b.Type)
		}
	}
}

func parseCertsPEM(path string, data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for n := 1; ; n++ {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, credErr(path, ErrBadCertificate, err, "certificate %s: PEM block %d (CERTIFICATE) does not parse: %v", path, n, err)
		}
		certs = append(certs, c)
	}
	if len(certs) > 0 {
		return certs, nil
	}
	if types := blockTypes(data); len(types) > 0 {
		return nil, credErr(path, ErrNoCertificate, nil, "certificate %s: no CERTIFICATE PEM block found (the file holds: %s)", path, strings.Join(types, ", "))
	}
	switch {
	case len(bytes.TrimSpace(data)) == 0:
		return nil, credErr(path, ErrNoCertificate, nil, "certificate %s: no CERTIFICATE PEM block found (the file is empty)", path)
	case isDERCert(data):
		return nil, credErr(path, ErrNoCertificate, nil, "certificate %s: no CERTIFICATE PEM block found (it is a DER certificate; convert with: openssl x509 -inform der -in %s -out %s)", path, path, pemName(path))
	case isP12(data):
		return nil, credErr(path, ErrNoCertificate, nil, "certificate %s: no CERTIFICATE PEM block found (it looks like a PKCS#12 .p12 file; configure it as the .p12 file instead)", path)
	}
	return nil, credErr(path, ErrNoCertificate, nil, "certificate %s: no CERTIFICATE PEM block found (is it DER? convert with: openssl x509 -inform der -in %s -out %s)", path, path, pemName(path))
}

// pemName suggests an output file name for an openssl conversion of path.
func pemName(path string) string {
	base := strings.TrimSuffix(path, filepath.Ext(path))
	if out := base + ".pem"; out != path {
		return out
	}
	return base + "-converted.pem"
}

func isDERCert(data []byte) bool {
	_, err := x509.ParseCertificate(data)
	return err == nil
}

func isP12(data []byte) bool {
	var pfx struct {
		Version  int
		AuthSafe asn1.RawValue
		MacData  asn1.RawValue `asn1:"optional"`
	}
	_, err := asn1.Unmarshal(data, &pfx)
	return err == nil && pfx.Version == 3
}

// keyBlock is a private-key PEM block and its position (1-based) among all
// the file's PEM blocks, for error messages.
type keyBlock struct {
	n int
	b *pem.Block
}

// privateKeyBlocks lists the PEM blocks of data whose type ends in
// "PRIVATE KEY", in file order.
func privateKeyBlocks(data []byte) []keyBlock {
	var out []keyBlock
	rest := data
	for n := 1; ; n++ {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return out
		}
		if strings.HasSuffix(b.Type, "PRIVATE KEY") {
			out = append(out, keyBlock{n, b})
		}
	}
}

// encryptedKey reports whether a private-key block is passphrase-encrypted
// (PKCS#8 "ENCRYPTED PRIVATE KEY" or legacy "Proc-Type: 4,ENCRYPTED").
func encryptedKey(b *pem.Block) bool {
	return b.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(b.Headers["Proc-Type"], "ENCRYPTED")
}

// parseKeyPEM finds the one private key in data. combined says data is a
// combined PEM, which changes the hint when no key is found.
func parseKeyPEM(path string, data []byte, combined bool) (crypto.PrivateKey, error) {
	var key crypto.PrivateKey
	for _, kb := range privateKeyBlocks(data) {
		n, b := kb.n, kb.b
		if encryptedKey(b) {
			return nil, credErr(path, ErrEncryptedKey, nil,
				"key %s: the private key is encrypted and apnsd cannot ask for its passphrase; decrypt it with: openssl pkey -in %s -out decrypted.pem (then chmod 600 and use that), or use a .p12 file with a passphrase instead", path, path)
		}
		if key != nil {
			return nil, credErr(path, ErrBadKey, nil, "key %s: more than one private key in the file", path)
		}
		k, err := parseKeyDER(b.Type, b.Bytes)
		if errors.Is(err, errUnsupportedKey) {
			return nil, credErr(path, ErrBadKey, err, "key %s: PEM block %d (%s): %v", path, n, b.Type, err)
		}
		if err != nil {
			return nil, credErr(path, ErrBadKey, err, "key %s: PEM block %d (%s) is not a valid PKCS#1, SEC 1 (EC) or PKCS#8 private key", path, n, b.Type)
		}
		key = k
	}
	if key != nil {
		return key, nil
	}
	if types := blockTypes(data); len(types) > 0 {
		hint := ""
		if combined {
			hint = "; a certificate file without a key file must hold the private key too"
		}
		return nil, credErr(path, ErrNoKey, nil, "key %s: no private key PEM block found (the file holds: %s%s)", path, strings.Join(types, ", "), hint)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, credErr(path, ErrNoKey, nil, "key %s: no private key PEM block found (the file is empty)", path)
	}
	if _, err := parseKeyDER("", data); err == nil {
		return nil, credErr(path, ErrNoKey, nil, "key %s: no private key PEM block found (it is a DER key; convert with: openssl pkey -inform der -in %s -out %s)", path, path, pemName(path))
	}
	return nil, credErr(path, ErrNoKey, nil, "key %s: no private key PEM block found (is it DER? convert with: openssl pkey -inform der -in %s -out %s)", path, path, pemName(path))
}

var errUnsupportedKey = errors.New("unsupported private key type")

// parseKeyDER parses a PKCS#1, SEC 1 (EC) or PKCS#8 key. typ is the PEM
// block type, used to try the expected form first; any form is accepted.
// Errors never include key bytes.
func parseKeyDER(typ string, der []byte) (crypto.PrivateKey, error) {
	var first error
	try := func(k crypto.PrivateKey, err error) (crypto.PrivateKey, bool) {
		if err == nil {
			return k, true
		}
		if first == nil {
			first = err
		}
		return nil, false
	}
	parsers := []func([]byte) (crypto.PrivateKey, error){
		func(b []byte) (crypto.PrivateKey, error) { return x509.ParsePKCS8PrivateKey(b) },
		func(b []byte) (crypto.PrivateKey, error) { return x509.ParsePKCS1PrivateKey(b) },
		func(b []byte) (crypto.PrivateKey, error) { return x509.ParseECPrivateKey(b) },
	}
	switch typ {
	case "RSA PRIVATE KEY":
		parsers[0], parsers[1] = parsers[1], parsers[0]
	case "EC PRIVATE KEY":
		parsers[0], parsers[2] = parsers[2], parsers[0]
	}
	for _, p := range parsers {
		if k, ok := try(p(der)); ok {
			switch k.(type) {
			case *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey:
				return k, nil
			default:
				return nil, fmt.Errorf("%w %T (want RSA, ECDSA or Ed25519)", errUnsupportedKey, k)
			}
		}
	}
	return nil, first
}

func loadP12(f CertFiles) ([]*x509.Certificate, crypto.PrivateKey, error) {
	data, err := readCredFile("p12", f.P12File)
	if err != nil {
		return nil, nil, err
	}
	password, source := "", "no passphrase configured"
	switch {
	case f.P12PasswordFile != "":
		pw, err := readCredFile("p12 passphrase file", f.P12PasswordFile)
		if err != nil {
			var ce *CredentialError
			if errors.As(err, &ce) {
				ce.Kind = ErrP12Password
			}
			return nil, nil, err
		}
		password = strings.TrimSuffix(strings.TrimSuffix(string(pw), "\n"), "\r")
		source = "passphrase from " + f.P12PasswordFile
	case f.P12PasswordEnv != "":
		pw, ok := os.LookupEnv(f.P12PasswordEnv)
		if !ok {
			return nil, nil, credErr(f.P12File, ErrP12Password, nil, "p12 %s: passphrase environment variable %s is not set", f.P12File, f.P12PasswordEnv)
		}
		password = pw
		source = "passphrase from environment variable " + f.P12PasswordEnv
	}
	key, leaf, chain, err := pkcs12.DecodeChain(data, password)
	if err != nil {
		if errors.Is(err, pkcs12.ErrIncorrectPassword) || errors.Is(err, pkcs12.ErrDecryption) {
			return nil, nil, credErr(f.P12File, ErrP12Password, nil, "p12 %s: wrong passphrase (%s)", f.P12File, source)
		}
		if bytes.Contains(data, []byte("-----BEGIN")) {
			return nil, nil, credErr(f.P12File, ErrBadP12, err, "p12 %s: this is a PEM file, not PKCS#12; configure it as the certificate file instead", f.P12File)
		}
		if strings.Contains(err.Error(), "error reading P12 data") {
			return nil, nil, credErr(f.P12File, ErrBadP12, err, "p12 %s: not a PKCS#12 file (it does not parse as one)", f.P12File)
		}
		return nil, nil, credErr(f.P12File, ErrBadP12, err, "p12 %s: cannot decode PKCS#12: %v", f.P12File, err)
	}
	switch key.(type) {
	case *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey:
	default:
		return nil, nil, credErr(f.P12File, ErrBadKey, nil, "p12 %s: unsupported private key type %T", f.P12File, key)
	}
	return append([]*x509.Certificate{leaf}, chain...), key, nil
}

func publicKeysEqual(certPub crypto.PublicKey, key crypto.PrivateKey) bool {
	s, ok := key.(crypto.Signer)
	if !ok {
		return false
	}
	pub, ok := s.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(certPub)
}

func subjectUID(c *x509.Certificate) string {
	for _, a := range c.Subject.Names {
		if a.Type.Equal(oidUserID) {
			if s, ok := a.Value.(string); ok {
				return s
			}
		}
	}
	return ""
}

func certEnv(c *x509.Certificate) string {
	var dev, prod bool
	for _, e := range c.Extensions {
		switch {
		case e.Id.Equal(oidAppleDevelopment):
			dev = true
		case e.Id.Equal(oidAppleProduction):
			prod = true
		}
	}
	switch {
	case dev && prod:
		return "both"
	case dev:
		return Sandbox
	case prod:
		return Production
	}
	return ""
}

// extensionTopics decodes Apple's topics extension: a SEQUENCE whose string
// elements are topics, each usually followed by a SEQUENCE of flags ("app",
// "voip", ...), which is skipped. A malformed extension yields no topics.
func extensionTopics(c *x509.Certificate) []string {
	for _, e := range c.Extensions {
		if !e.Id.Equal(oidAppleTopics) {
			continue
		}
		var elems []asn1.RawValue
		if _, err := asn1.Unmarshal(e.Value, &elems); err != nil {
			return nil
		}
		var topics []string
		for _, el := range elems {
			if el.Class != asn1.ClassUniversal {
				continue
			}
			switch el.Tag {
			case asn1.TagUTF8String, asn1.TagPrintableString, asn1.TagIA5String:
				if t := string(el.Bytes); t != "" {
					topics = append(topics, t)
				}
			}
		}
		return topics
	}
	return nil
}

var attrNames = []struct {
	oid  asn1.ObjectIdentifier
	name string
}{
	{asn1.ObjectIdentifier{2, 5, 4, 3}, "CN"},
	{oidUserID, "UID"},
	{asn1.ObjectIdentifier{2, 5, 4, 11}, "OU"},
	{asn1.ObjectIdentifier{2, 5, 4, 10}, "O"},
	{asn1.ObjectIdentifier{2, 5, 4, 7}, "L"},
	{asn1.ObjectIdentifier{2, 5, 4, 8}, "ST"},
	{asn1.ObjectIdentifier{2, 5, 4, 6}, "C"},
	{asn1.ObjectIdentifier{2, 5, 4, 5}, "SERIALNUMBER"},
}

// humanSubject renders the subject with CN and UID first, then OU, O, L, ST,
// C and any other attribute by OID, in the "A=v,B=w" form.
func humanSubject(c *x509.Certificate) string {
	var parts []string
	used := make([]bool, len(c.Subject.Names))
	add := func(name string, v any) {
		s := fmt.Sprint(v)
		var b strings.Builder
		for i, r := range s {
			if strings.ContainsRune(`,+"\<>;`, r) || (i == 0 && (r == '#' || r == ' ')) {
				b.WriteByte('\\')
			}
			b.WriteRune(r)
		}
		parts = append(parts, name+"="+b.String())
	}
	for _, an := range attrNames {
		for i, a := range c.Subject.Names {
			if !used[i] && a.Type.Equal(an.oid) {
				used[i] = true
				add(an.name, a.Value)
			}
		}
	}
	for i, a := range c.Subject.Names {
		if !used[i] {
			add(a.Type.String(), a.Value)
		}
	}
	return strings.Join(parts, ",")
}

// KeyFileWarnings returns one warning for each existing file of f that holds
// a secret (private key, combined PEM, .p12, passphrase file) and that other
// users may read. Group-readable files are normal (a group shared with the
// daemon) and not reported. Files that cannot be stat'ed are skipped;
// LoadCertificate reports them.
func KeyFileWarnings(f CertFiles) []string {
	var w []string
	for _, p := range f.keyFiles() {
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		if m := fi.Mode().Perm(); m&0o004 != 0 {
			w = append(w, fmt.Sprintf("%s is readable by other users (mode %04o); chmod 600 it", p, m))
		}
	}
	return w
}
