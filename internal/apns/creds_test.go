package apns

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apnsd/apnsd/internal/pki"
	"software.sslmate.com/src/go-pkcs12"
)

// fixtures are made once per test binary: RSA key generation is slow.
type credFixtures struct {
	ca, otherCA *pki.CA
	rsaDev      *pki.Issued // RSA, development, com.example.app
	ecProd      *pki.Issued // ECDSA, production, multi-topic
	expired     *pki.Issued
	future      *pki.Issued
}

var (
	fixOnce sync.Once
	fix     credFixtures
	fixErr  error
)

func fixtures(t *testing.T) *credFixtures {
	t.Helper()
	fixOnce.Do(func() {
		var f credFixtures
		must := func(i *pki.Issued, err error) *pki.Issued {
			if err != nil && fixErr == nil {
				fixErr = err
			}
			return i
		}
		if f.ca, fixErr = pki.NewCA("test CA"); fixErr != nil {
			return
		}
		if f.otherCA, fixErr = pki.NewCA("other CA"); fixErr != nil {
			return
		}
		f.rsaDev = must(f.ca.PushCert(pki.PushCertOptions{Topic: "com.example.app", RSA: true}))
		f.ecProd = must(f.ca.PushCert(pki.PushCertOptions{
			Topic:      "com.example.multi",
			Topics:     []string{"com.example.multi", "com.example.multi.voip", "com.example.other"},
			Production: true,
		}))
		now := time.Now()
		f.expired = must(f.ca.PushCert(pki.PushCertOptions{Topic: "com.example.app", NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-24 * time.Hour)}))
		f.future = must(f.ca.PushCert(pki.PushCertOptions{Topic: "com.example.app", NotBefore: now.Add(24 * time.Hour), NotAfter: now.Add(48 * time.Hour)}))
		fix = f
	})
	if fixErr != nil {
		t.Fatalf("making fixtures: %v", fixErr)
	}
	return &fix
}

func writeFile(t *testing.T, dir, name string, data []byte, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // umask
		t.Fatal(err)
	}
	return p
}

func cat(b ...[]byte) []byte { return slices.Concat(b...) }

func pemOf(typ string, der []byte, headers map[string]string) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Headers: headers, Bytes: der})
}

func p12(t *testing.T, enc *pkcs12.Encoder, i *pki.Issued, chain []*x509.Certificate, password string) []byte {
	t.Helper()
	data, err := enc.Encode(i.Key, i.Cert, chain, password)
	if err != nil {
		t.Fatalf("pkcs12 encode: %v", err)
	}
	return data
}

func TestLoadCertificate(t *testing.T) {
	fx := fixtures(t)
	dir := t.TempDir()
	w := func(name string, data []byte) string { return writeFile(t, dir, name, data, 0o600) }

	ecKey := fx.ecProd.Key.(*ecdsa.PrivateKey)
	sec1, err := x509.MarshalECPrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	rsaPKCS8, err := x509.MarshalPKCS8PrivateKey(fx.rsaDev.Key.(*rsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	keyBlock, _ := pem.Decode(fx.ecProd.KeyPEM)

	var (
		rsaCert   = w("rsa.crt", fx.rsaDev.CertPEM)
		rsaKey    = w("rsa.key", fx.rsaDev.KeyPEM) // PKCS#1
		rsaKey8   = w("rsa8.key", pemOf("PRIVATE KEY", rsaPKCS8, nil))
		ecCert    = w("ec.crt", fx.ecProd.CertPEM)
		ecKey8    = w("ec.key", fx.ecProd.KeyPEM) // PKCS#8
		ecKeySEC1 = w("ec-sec1.key", cat(pemOf("EC PARAMETERS", []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}, nil), pemOf("EC PRIVATE KEY", sec1, nil)))
		combined  = w("combined.pem", cat(fx.rsaDev.KeyPEM, fx.rsaDev.CertPEM)) // key first
		chainPEM  = w("chain.crt", cat(fx.ca.CertPEM, fx.ecProd.CertPEM))       // CA before leaf
		combChain = w("comb-chain.pem", cat(fx.ecProd.CertPEM, fx.ca.CertPEM, fx.ecProd.KeyPEM))
		expCert   = w("expired.crt", fx.expired.CertPEM)
		expKey    = w("expired.key", fx.expired.KeyPEM)
		futCert   = w("future.crt", fx.future.CertPEM)
		futKey    = w("future.key", fx.future.KeyPEM)
		derCert   = w("der.cer", fx.rsaDev.Cert.Raw)
		derKey    = w("der.key", rsaPKCS8)
		encKey8   = w("enc8.key", pemOf("ENCRYPTED PRIVATE KEY", []byte{0x30, 0}, nil))
		encKeyOld = w("enc-legacy.key", pemOf("RSA PRIVATE KEY", []byte{1, 2, 3}, map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00112233445566778899AABBCCDDEEFF"}))
		garbage   = w("garbage.pem", []byte("hello, this is not a certificate\n"))
		empty     = w("empty.pem", nil)
		badBlock  = w("badblock.pem", pemOf("CERTIFICATE", []byte("nope"), nil))
		badKey    = w("badkey.pem", pemOf("PRIVATE KEY", []byte("nope"), nil))
		twoKeys   = w("twokeys.pem", cat(fx.rsaDev.KeyPEM, fx.ecProd.KeyPEM))
		missing   = filepath.Join(dir, "does-not-exist.pem")

		p12Modern   = w("modern.p12", p12(t, pkcs12.Modern, fx.rsaDev, nil, "s3cret pass"))
		p12Legacy   = w("legacy.p12", p12(t, pkcs12.LegacyDES, fx.ecProd, []*x509.Certificate{fx.ca.Cert}, "hunter2"))
		p12RC2      = w("rc2.p12", p12(t, pkcs12.LegacyRC2, fx.rsaDev, nil, "hunter2"))
		p12NoPass   = w("nopass.p12", p12(t, pkcs12.Passwordless, fx.ecProd, nil, ""))
		p12EmptyPwd = w("emptypwd.p12", p12(t, pkcs12.Modern, fx.ecProd, nil, ""))
		p12Expired  = w("expired.p12", p12(t, pkcs12.Modern, fx.expired, nil, ""))
		pwFile      = w("p12.pass", []byte("s3cret pass\n"))
		pwHunter    = w("hunter.pass", []byte("hunter2\r\n"))
		pwWrong     = w("wrong.pass", []byte("not it"))
	)
	t.Setenv("APNSD_TEST_P12_PASS", "hunter2")
	t.Setenv("APNSD_TEST_P12_WRONG", "wrong")

	now := time.Now()
	tests := []struct {
		name    string
		files   CertFiles
		now     time.Time // zero: now
		wantErr error
		wantIn  []string // substrings of the error message
		check   func(t *testing.T, c *Certificate)
	}{
		{name: "separate RSA PKCS#1", files: CertFiles{CertFile: rsaCert, KeyFile: rsaKey}, check: func(t *testing.T, c *Certificate) {
			if _, ok := c.TLS.PrivateKey.(*rsa.PrivateKey); !ok {
				t.Errorf("key type %T, want RSA", c.TLS.PrivateKey)
			}
			if c.Env != "sandbox" {
				t.Errorf("Env = %q, want sandbox", c.Env)
			}
			if !slices.Equal(c.Topics, []string{"com.example.app"}) {
				t.Errorf("Topics = %q", c.Topics)
			}
		}},
		{name: "separate RSA PKCS#8", files: CertFiles{CertFile: rsaCert, KeyFile: rsaKey8}},
		{name: "separate EC PKCS#8", files: CertFiles{CertFile: ecCert, KeyFile: ecKey8}, check: func(t *testing.T, c *Certificate) {
			if c.Env != "production" {
				t.Errorf("Env = %q, want production", c.Env)
			}
			want := []string{"com.example.multi", "com.example.multi.voip", "com.example.other"}
			if !slices.Equal(c.Topics, want) {
				t.Errorf("Topics = %q, want %q", c.Topics, want)
			}
		}},
		{name: "separate EC SEC1 with EC PARAMETERS", files: CertFiles{CertFile: ecCert, KeyFile: ecKeySEC1}},
		{name: "combined key first", files: CertFiles{CertFile: combined}, check: func(t *testing.T, c *Certificate) {
			if len(c.TLS.Certificate) != 1 {
				t.Errorf("chain length %d, want 1", len(c.TLS.Certificate))
			}
		}},
		{name: "chain CA first", files: CertFiles{CertFile: chainPEM, KeyFile: ecKey8}, check: wantChain(fx.ecProd.Cert, fx.ca.Cert)},
		{name: "combined with chain", files: CertFiles{CertFile: combChain}, check: wantChain(fx.ecProd.Cert, fx.ca.Cert)},
		{name: "p12 modern password file", files: CertFiles{P12File: p12Modern, P12PasswordFile: pwFile}, check: wantChain(fx.rsaDev.Cert)},
		{name: "p12 legacy 3DES env password with chain", files: CertFiles{P12File: p12Legacy, P12PasswordEnv: "APNSD_TEST_P12_PASS"}, check: wantChain(fx.ecProd.Cert, fx.ca.Cert)},
		{name: "p12 legacy RC2 password file CRLF", files: CertFiles{P12File: p12RC2, P12PasswordFile: pwHunter}, check: wantChain(fx.rsaDev.Cert)},
		{name: "p12 passwordless", files: CertFiles{P12File: p12NoPass}, check: wantChain(fx.ecProd.Cert)},
		{name: "p12 empty password", files: CertFiles{P12File: p12EmptyPwd}, check: wantChain(fx.ecProd.Cert)},

		{name: "expired", files: CertFiles{CertFile: expCert, KeyFile: expKey}, wantErr: ErrCertExpired,
			wantIn: []string{"certificate " + expCert + ": expired on " + fx.expired.Cert.NotAfter.UTC().Format("2006-01-02"), "(not_after"}},
		{name: "expired by clock", files: CertFiles{CertFile: rsaCert, KeyFile: rsaKey}, now: fx.rsaDev.Cert.NotAfter.Add(time.Second), wantErr: ErrCertExpired, wantIn: []string{rsaCert}},
		{name: "expired p12", files: CertFiles{P12File: p12Expired}, wantErr: ErrCertExpired, wantIn: []string{"certificate " + p12Expired + ": expired"}},
		{name: "not yet valid", files: CertFiles{CertFile: futCert, KeyFile: futKey}, wantErr: ErrCertNotYetValid,
			wantIn: []string{"certificate " + futCert + ": not valid until", "not_before"}},
		{name: "mismatched key", files: CertFiles{CertFile: rsaCert, KeyFile: ecKey8}, wantErr: ErrKeyMismatch,
			wantIn: []string{"key " + ecKey8 + " does not match certificate " + rsaCert}},
		{name: "mismatched key chain only", files: CertFiles{CertFile: chainPEM, KeyFile: rsaKey}, wantErr: ErrKeyMismatch, wantIn: []string{rsaKey, chainPEM}},
		{name: "DER certificate", files: CertFiles{CertFile: derCert, KeyFile: rsaKey}, wantErr: ErrNoCertificate,
			wantIn: []string{derCert + ": no CERTIFICATE PEM block found", "openssl x509 -inform der"}},
		{name: "DER key", files: CertFiles{CertFile: rsaCert, KeyFile: derKey}, wantErr: ErrNoKey,
			wantIn: []string{"key " + derKey + ": no private key PEM block found", "openssl pkey -inform der"}},
		{name: "p12 as certificate", files: CertFiles{CertFile: p12NoPass}, wantErr: ErrNoCertificate, wantIn: []string{p12NoPass, "PKCS#12"}},
		{name: "PEM as p12", files: CertFiles{P12File: combined}, wantErr: ErrBadP12, wantIn: []string{"p12 " + combined, "PEM file"}},
		{name: "key given as certificate", files: CertFiles{CertFile: rsaKey, KeyFile: rsaKey}, wantErr: ErrNoCertificate, wantIn: []string{rsaKey, "RSA PRIVATE KEY"}},
		{name: "encrypted PKCS#8 key", files: CertFiles{CertFile: rsaCert, KeyFile: encKey8}, wantErr: ErrEncryptedKey,
			wantIn: []string{"key " + encKey8, "encrypted", "openssl pkey", ".p12"}},
		{name: "encrypted legacy key", files: CertFiles{CertFile: rsaCert, KeyFile: encKeyOld}, wantErr: ErrEncryptedKey, wantIn: []string{encKeyOld, "openssl pkey"}},
		{name: "garbage certificate", files: CertFiles{CertFile: garbage, KeyFile: rsaKey}, wantErr: ErrNoCertificate, wantIn: []string{garbage + ": no CERTIFICATE PEM block found"}},
		{name: "garbage key", files: CertFiles{CertFile: rsaCert, KeyFile: garbage}, wantErr: ErrNoKey, wantIn: []string{"key " + garbage}},
		{name: "empty certificate", files: CertFiles{CertFile: empty, KeyFile: rsaKey}, wantErr: ErrNoCertificate, wantIn: []string{empty, "empty"}},
		{name: "combined without key", files: CertFiles{CertFile: rsaCert}, wantErr: ErrNoKey, wantIn: []string{rsaCert, "must hold the private key"}},
		{name: "bad certificate block", files: CertFiles{CertFile: badBlock, KeyFile: rsaKey}, wantErr: ErrBadCertificate, wantIn: []string{badBlock, "PEM block 1"}},
		{name: "bad key block", files: CertFiles{CertFile: rsaCert, KeyFile: badKey}, wantErr: ErrBadKey, wantIn: []string{badKey}},
		{name: "two keys", files: CertFiles{CertFile: rsaCert, KeyFile: twoKeys}, wantErr: ErrBadKey, wantIn: []string{twoKeys, "more than one"}},
		{name: "garbage p12", files: CertFiles{P12File: garbage}, wantErr: ErrBadP12, wantIn: []string{"p12 " + garbage}},
		{name: "missing certificate", files: CertFiles{CertFile: missing, KeyFile: rsaKey}, wantErr: ErrUnreadable,
			wantIn: []string{"certificate " + missing + ": cannot read: no such file or directory"}},
		{name: "missing key", files: CertFiles{CertFile: rsaCert, KeyFile: missing}, wantErr: ErrUnreadable, wantIn: []string{"key " + missing}},
		{name: "missing p12", files: CertFiles{P12File: missing}, wantErr: ErrUnreadable, wantIn: []string{"p12 " + missing}},
		{name: "missing password file", files: CertFiles{P12File: p12Modern, P12PasswordFile: missing}, wantErr: ErrP12Password, wantIn: []string{"passphrase file " + missing}},
		{name: "p12 wrong password file", files: CertFiles{P12File: p12Modern, P12PasswordFile: pwWrong}, wantErr: ErrP12Password,
			wantIn: []string{"p12 " + p12Modern + ": wrong passphrase", pwWrong}},
		{name: "p12 wrong password env", files: CertFiles{P12File: p12Legacy, P12PasswordEnv: "APNSD_TEST_P12_WRONG"}, wantErr: ErrP12Password, wantIn: []string{p12Legacy, "APNSD_TEST_P12_WRONG"}},
		{name: "p12 password needed", files: CertFiles{P12File: p12Modern}, wantErr: ErrP12Password, wantIn: []string{p12Modern, "no passphrase configured"}},
		{name: "p12 env unset", files: CertFiles{P12File: p12Modern, P12PasswordEnv: "APNSD_TEST_UNSET_VAR"}, wantErr: ErrP12Password, wantIn: []string{"APNSD_TEST_UNSET_VAR is not set"}},
		{name: "nothing", files: CertFiles{}, wantErr: ErrCertFiles},
		{name: "pem and p12", files: CertFiles{CertFile: rsaCert, P12File: p12Modern}, wantErr: ErrCertFiles, wantIn: []string{rsaCert, p12Modern}},
		{name: "key without cert", files: CertFiles{KeyFile: rsaKey}, wantErr: ErrCertFiles, wantIn: []string{rsaKey}},
		{name: "password without p12", files: CertFiles{CertFile: combined, P12PasswordEnv: "X"}, wantErr: ErrCertFiles},
		{name: "two password sources", files: CertFiles{P12File: p12Modern, P12PasswordFile: pwFile, P12PasswordEnv: "X"}, wantErr: ErrCertFiles},
	}
	secrets := []string{"s3cret pass", "hunter2", "not it", string(keyBlock.Bytes)}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			at := tt.now
			if at.IsZero() {
				at = now
			}
			c, err := LoadCertificate(tt.files, at)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("LoadCertificate(%+v) = nil error, want %v", tt.files, tt.wantErr)
				}
				t.Logf("error: %v", err)
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("LoadCertificate error %q is not %v", err, tt.wantErr)
				}
				var ce *CredentialError
				if !errors.As(err, &ce) {
					t.Errorf("error %T is not a *CredentialError", err)
				} else if !errors.Is(tt.wantErr, ErrCertFiles) && !strings.Contains(err.Error(), ce.Path) {
					t.Errorf("error %q does not name its Path %q", err, ce.Path)
				}
				for _, s := range tt.wantIn {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not contain %q", err, s)
					}
				}
				for _, s := range secrets {
					if strings.Contains(err.Error(), s) {
						t.Errorf("error %q leaks a secret", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadCertificate(%+v): %v", tt.files, err)
			}
			checkCommon(t, c, tt.files, at)
			if tt.check != nil {
				tt.check(t, c)
			}
		})
	}

	t.Run("missing file is fs.ErrNotExist", func(t *testing.T) {
		_, err := LoadCertificate(CertFiles{CertFile: missing}, now)
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("error %v is not fs.ErrNotExist", err)
		}
	})
}

func wantChain(leaf *x509.Certificate, rest ...*x509.Certificate) func(*testing.T, *Certificate) {
	return func(t *testing.T, c *Certificate) {
		t.Helper()
		want := [][]byte{leaf.Raw}
		for _, r := range rest {
			want = append(want, r.Raw)
		}
		if !slices.EqualFunc(c.TLS.Certificate, want, func(a, b []byte) bool { return string(a) == string(b) }) {
			t.Errorf("TLS chain has %d certs, not the expected leaf-first chain of %d", len(c.TLS.Certificate), len(want))
		}
	}
}

func checkCommon(t *testing.T, c *Certificate, f CertFiles, now time.Time) {
	t.Helper()
	if c.Leaf == nil || c.TLS.Leaf != c.Leaf {
		t.Fatalf("Leaf not set or TLS.Leaf differs")
	}
	if string(c.TLS.Certificate[0]) != string(c.Leaf.Raw) {
		t.Errorf("TLS.Certificate[0] is not the leaf")
	}
	if !publicKeysEqual(c.Leaf.PublicKey, c.TLS.PrivateKey) {
		t.Errorf("private key does not match leaf")
	}
	sum := sha256.Sum256(c.Leaf.Raw)
	if c.Fingerprint != hex.EncodeToString(sum[:]) {
		t.Errorf("Fingerprint = %s", c.Fingerprint)
	}
	if !c.NotBefore.Equal(c.Leaf.NotBefore) || !c.NotAfter.Equal(c.Leaf.NotAfter) {
		t.Errorf("validity not copied")
	}
	if !c.LoadedAt.Equal(now) || c.Source != f {
		t.Errorf("LoadedAt/Source not set")
	}
	uid := c.Topics[0]
	wantSubj := "CN=Apple "
	if !strings.HasPrefix(c.Subject, wantSubj) || !strings.Contains(c.Subject, ": "+uid+",UID="+uid+",OU=ABCDE12345,O=apnsd throwaway,C=US") {
		t.Errorf("Subject = %q", c.Subject)
	}
}

func TestCovers(t *testing.T) {
	fx := fixtures(t)
	dir := t.TempDir()
	load := func(i *pki.Issued) *Certificate {
		p := filepath.Join(dir, "c.pem")
		if err := i.WriteFiles(p, ""); err != nil {
			t.Fatal(err)
		}
		c, err := LoadCertificate(CertFiles{CertFile: p}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	single, multi := load(fx.rsaDev), load(fx.ecProd)
	tests := []struct {
		c     *Certificate
		topic string
		want  bool
	}{
		{single, "com.example.app", true},
		{single, "com.example.app.voip", true},
		{single, "com.example.app.complication", true},
		{single, "com.example.app.pushkit.fileprovider", true},
		{single, "com.example.app.location-query", true},
		{single, "com.example.app.push-type.liveactivity", true},
		{single, "com.example.app.voip-ptt", true},
		{single, "com.example.app.other", false},
		{single, "com.example.ap", false},
		{single, "com.example", false},
		{single, "", false},
		{multi, "com.example.multi", true},
		{multi, "com.example.other", true},
		{multi, "com.example.multi.voip", true},
		{multi, "com.example.multi.complication", true}, // UID + suffix
		{multi, "com.example.other.voip", false},        // suffix only applies to the UID
		{multi, "com.example.app", false},
	}
	for _, tt := range tests {
		if got := tt.c.Covers(tt.topic); got != tt.want {
			t.Errorf("Covers(%q) on %q = %v, want %v", tt.topic, tt.c.Topics, got, tt.want)
		}
	}
}

func TestCertEnvBoth(t *testing.T) {
	fx := fixtures(t)
	// A certificate with both of Apple's environment OIDs.
	c := *fx.rsaDev.Cert
	c.Extensions = append(slices.Clone(c.Extensions), pkixExt(oidAppleProduction))
	if got := certEnv(&c); got != "both" {
		t.Errorf("certEnv = %q, want both", got)
	}
	c.Extensions = nil
	if got := certEnv(&c); got != "" {
		t.Errorf("certEnv without OIDs = %q, want empty", got)
	}
}

func TestExtensionTopicsPlainList(t *testing.T) {
	// The decoder accepts a plain SEQUENCE of strings as well as Apple's
	// topic/flags pairs.
	c := &x509.Certificate{}
	der := []byte{0x30, 0x0a, 0x0c, 0x03, 'a', '.', 'b', 0x0c, 0x03, 'c', '.', 'd'}
	c.Extensions = append(c.Extensions, pkixExtValue(oidAppleTopics, der))
	if got := extensionTopics(c); !slices.Equal(got, []string{"a.b", "c.d"}) {
		t.Errorf("extensionTopics = %q", got)
	}
	c.Extensions[0].Value = []byte{0xff}
	if got := extensionTopics(c); got != nil {
		t.Errorf("malformed extension gave %q", got)
	}
}

func TestCertFilesPaths(t *testing.T) {
	tests := []struct {
		f    CertFiles
		want []string
	}{
		{CertFiles{CertFile: "/a.pem", KeyFile: "/a.key"}, []string{"/a.pem", "/a.key"}},
		{CertFiles{CertFile: "/a.pem"}, []string{"/a.pem"}},
		{CertFiles{P12File: "/a.p12", P12PasswordFile: "/pw", P12PasswordEnv: "ENV"}, []string{"/a.p12", "/pw"}},
		{CertFiles{}, nil},
	}
	for _, tt := range tests {
		if got := tt.f.Paths(); !slices.Equal(got, tt.want) {
			t.Errorf("%+v.Paths() = %q, want %q", tt.f, got, tt.want)
		}
	}
}

func TestKeyFileWarnings(t *testing.T) {
	dir := t.TempDir()
	w := func(name string, mode os.FileMode) string { return writeFile(t, dir, name, []byte("x"), mode) }
	var (
		cert644  = w("cert.pem", 0o644)
		key600   = w("key600.pem", 0o600)
		key640   = w("key640.pem", 0o640)
		key644   = w("key644.pem", 0o644)
		comb604  = w("comb.pem", 0o604)
		p12644   = w("a.p12", 0o644)
		pw644    = w("pw", 0o644)
		p12600   = w("b.p12", 0o600)
		nonexist = filepath.Join(dir, "nope")
	)
	tests := []struct {
		name string
		f    CertFiles
		want []string
	}{
		{"private key 0600", CertFiles{CertFile: cert644, KeyFile: key600}, nil},
		{"group readable is fine", CertFiles{CertFile: cert644, KeyFile: key640}, nil},
		{"world readable key", CertFiles{CertFile: cert644, KeyFile: key644}, []string{key644 + " is readable by other users (mode 0644); chmod 600 it"}},
		{"combined", CertFiles{CertFile: comb604}, []string{comb604 + " is readable by other users (mode 0604); chmod 600 it"}},
		{"p12 and password", CertFiles{P12File: p12644, P12PasswordFile: pw644}, []string{
			p12644 + " is readable by other users (mode 0644); chmod 600 it",
			pw644 + " is readable by other users (mode 0644); chmod 600 it",
		}},
		{"p12 0600", CertFiles{P12File: p12600}, nil},
		{"missing", CertFiles{CertFile: cert644, KeyFile: nonexist}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := KeyFileWarnings(tt.f); !slices.Equal(got, tt.want) {
				t.Errorf("KeyFileWarnings = %q, want %q", got, tt.want)
			}
		})
	}
}

func pkixExt(id asn1.ObjectIdentifier) pkix.Extension {
	return pkix.Extension{Id: id, Value: []byte{0x05, 0x00}}
}

func pkixExtValue(id asn1.ObjectIdentifier, v []byte) pkix.Extension {
	return pkix.Extension{Id: id, Value: v}
}
