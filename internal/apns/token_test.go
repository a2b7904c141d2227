package apns_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apnsd/apnsd/internal/apns"
	"github.com/apnsd/apnsd/internal/apnstest"
	"github.com/apnsd/apnsd/internal/pki"
)

const (
	tokKeyID  = "ABC123DEFG"
	tokKeyID2 = "XYZ987WVUT"
	tokTeamID = "TEAM123456"
	tokTeam2  = "OTHER98765"
)

// fakeClock is an injectable clock for TokenOptions.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// writeP8 makes a fresh .p8 key, writes it to dir/AuthKey_<keyID>.p8 and
// loads it.
func writeP8(t *testing.T, dir, keyID, teamID string) *apns.TokenKey {
	t.Helper()
	_, pemData, err := pki.NewP8Key()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "AuthKey_"+keyID+".p8")
	if err := os.WriteFile(path, pemData, 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := apns.LoadTokenKey(path, keyID, teamID, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// jwtParts is a provider token decoded without the stand-in's help.
type jwtParts struct {
	header, claims []byte // decoded JSON, exactly as sent
	sig            []byte // raw signature
	signing        string // header.claims, as signed
}

// decodeBearer checks the "bearer " prefix and the three unpadded base64url
// segments and decodes them.
func decodeBearer(t *testing.T, auth string) jwtParts {
	t.Helper()
	jwt, ok := strings.CutPrefix(auth, "bearer ")
	if !ok {
		t.Fatalf("authorization %q: want a \"bearer \" prefix", auth)
	}
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("jwt has %d segments, want 3", len(parts))
	}
	var dec [3][]byte
	for i, p := range parts {
		if strings.ContainsAny(p, "=+/") {
			t.Fatalf("segment %d %q is not unpadded base64url", i, p)
		}
		b, err := base64.RawURLEncoding.DecodeString(p)
		if err != nil {
			t.Fatalf("segment %d: %v", i, err)
		}
		dec[i] = b
	}
	return jwtParts{header: dec[0], claims: dec[1], sig: dec[2], signing: parts[0] + "." + parts[1]}
}

// verifyIndependently checks a token the way a reader of RFC 7515/7518
// would: exact header and claims JSON, and a 64-byte r‖s signature that
// ecdsa.Verify accepts.
func verifyIndependently(t *testing.T, auth string, pub *ecdsa.PublicKey, keyID, teamID string, iat time.Time) jwtParts {
	t.Helper()
	p := decodeBearer(t, auth)
	if want := fmt.Sprintf(`{"alg":"ES256","kid":"%s"}`, keyID); string(p.header) != want {
		t.Errorf("header = %s, want %s", p.header, want)
	}
	if want := fmt.Sprintf(`{"iss":"%s","iat":%d}`, teamID, iat.Unix()); string(p.claims) != want {
		t.Errorf("claims = %s, want %s", p.claims, want)
	}
	if len(p.sig) != 64 {
		t.Fatalf("signature is %d bytes, want 64 (raw r‖s, not DER)", len(p.sig))
	}
	digest := sha256.Sum256([]byte(p.signing))
	r := new(big.Int).SetBytes(p.sig[:32])
	s := new(big.Int).SetBytes(p.sig[32:])
	if !ecdsa.Verify(pub, digest[:], r, s) {
		t.Errorf("signature does not verify with ecdsa.Verify")
	}
	return p
}

func mustAuth(t *testing.T, ts *apns.TokenSource) string {
	t.Helper()
	a, err := ts.Authorization()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestTokenJWT(t *testing.T) {
	dir := t.TempDir()
	k := writeP8(t, dir, tokKeyID, tokTeamID)
	other := writeP8(t, dir, tokKeyID2, tokTeamID)
	clock := newFakeClock(time.Now())
	ts := apns.NewTokenSource(k, apns.TokenOptions{Now: clock.Now})

	auth := mustAuth(t, ts)
	verifyIndependently(t, auth, &k.Key.PublicKey, tokKeyID, tokTeamID, clock.Now())

	jwt := strings.TrimPrefix(auth, "bearer ")
	tests := []struct {
		name string
		keys map[string]*ecdsa.PublicKey
		want string
	}{
		{"right key", map[string]*ecdsa.PublicKey{tokKeyID: &k.Key.PublicKey}, ""},
		{"wrong key under the kid", map[string]*ecdsa.PublicKey{tokKeyID: &other.Key.PublicKey}, apns.ReasonInvalidProviderToken},
		{"unknown kid", map[string]*ecdsa.PublicKey{tokKeyID2: &k.Key.PublicKey}, apns.ReasonInvalidProviderToken},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := apnstest.ES256Verifier(tc.keys)(jwt); got != tc.want {
				t.Errorf("ES256Verifier = %q, want %q", got, tc.want)
			}
		})
	}

	info := ts.Info()
	want := apns.TokenInfo{
		KeyID: tokKeyID, TeamID: tokTeamID, KeyPath: k.Path, KeyFingerprint: k.Fingerprint,
		KeyLoadedAt: k.LoadedAt, IssuedAt: time.Unix(clock.Now().Unix(), 0), Mints: 1,
	}
	if !info.IssuedAt.Equal(want.IssuedAt) || !info.KeyLoadedAt.Equal(want.KeyLoadedAt) {
		t.Errorf("Info times = %v / %v, want %v / %v", info.IssuedAt, info.KeyLoadedAt, want.IssuedAt, want.KeyLoadedAt)
	}
	info.IssuedAt, info.KeyLoadedAt, want.IssuedAt, want.KeyLoadedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if info != want {
		t.Errorf("Info = %+v, want %+v", info, want)
	}
}

// TestTokenSignaturePadding mints until r or s has a leading zero byte (1 in
// 128 tokens on average) and checks it is left-padded to 32 bytes.
func TestTokenSignaturePadding(t *testing.T) {
	k := writeP8(t, t.TempDir(), tokKeyID, tokTeamID)
	clock := newFakeClock(time.Unix(1_700_000_000, 0))
	ts := apns.NewTokenSource(k, apns.TokenOptions{Now: clock.Now})
	for i := range 4096 {
		auth := mustAuth(t, ts)
		p := verifyIndependently(t, auth, &k.Key.PublicKey, tokKeyID, tokTeamID, clock.Now())
		if p.sig[0] == 0 || p.sig[32] == 0 {
			t.Logf("padded r or s found after %d tokens", i+1)
			return
		}
		clock.Advance(apns.DefaultTokenRefreshAfter)
	}
	t.Fatal("no signature with a leading zero byte in r or s in 4096 tokens")
}

// TestTokenSchedule walks one TokenSource through time. Each step sets the
// clock to start+at and does one call; tokens are named by the order they
// first appeared (0, 1, 2, ...).
func TestTokenSchedule(t *testing.T) {
	const (
		auth    = "Authorization"
		expired = "Expired"
	)
	type step struct {
		at   time.Duration
		op   string
		tok  int  // auth: the token wanted; expired: the token passed
		want bool // expired: the result wanted
		// mints is Info().Mints wanted after the step.
		mints uint64
	}
	m := time.Minute
	steps := []step{
		{0, auth, 0, false, 1},
		{1 * m, auth, 0, false, 1},
		{49*m + 59*time.Second, auth, 0, false, 1},
		{50 * m, auth, 1, false, 2}, // RefreshAfter reached
		{50 * m, auth, 1, false, 2},
		{50 * m, expired, 0, true, 2}, // stale: already replaced
		{50 * m, auth, 1, false, 2},
		{51 * m, expired, 1, false, 2}, // 1 min old: no mint
		{60 * m, expired, 1, false, 2},
		{69*m + 59*time.Second, expired, 1, false, 2},
		{69*m + 59*time.Second, auth, 1, false, 2},
		{70 * m, expired, 1, true, 2}, // 20 min old: dropped
		{70 * m, expired, 1, true, 2}, // already dropped
		{70 * m, expired, 0, true, 2},
		{70 * m, auth, 2, false, 3}, // minted once
		{70 * m, auth, 2, false, 3},
		{70 * m, expired, 2, false, 3}, // brand new
		{70 * m, expired, 1, true, 3},  // stale after the refresh
		{70 * m, auth, 2, false, 3},
		{89 * m, expired, 2, false, 3},
		{119 * m, auth, 2, false, 3},
		{120 * m, auth, 3, false, 4},
	}
	k := writeP8(t, t.TempDir(), tokKeyID, tokTeamID)
	start := time.Unix(1_700_000_000, 0)
	clock := newFakeClock(start)
	ts := apns.NewTokenSource(k, apns.TokenOptions{Now: clock.Now})
	var seen []string
	for i, s := range steps {
		clock.Set(start.Add(s.at))
		switch s.op {
		case auth:
			got := mustAuth(t, ts)
			if s.tok == len(seen) {
				seen = append(seen, got)
			}
			if got != seen[s.tok] {
				t.Errorf("step %d (%v %s): got another token than token %d", i, s.at, s.op, s.tok)
			}
			verifyIndependently(t, got, &k.Key.PublicKey, tokKeyID, tokTeamID, ts.Info().IssuedAt)
		case expired:
			if got := ts.Expired(seen[s.tok]); got != s.want {
				t.Errorf("step %d (%v Expired(token %d)) = %v, want %v", i, s.at, s.tok, got, s.want)
			}
		}
		if got := ts.Info().Mints; got != s.mints {
			t.Errorf("step %d (%v %s): Mints = %d, want %d", i, s.at, s.op, got, s.mints)
		}
	}
}

// TestTokenNeverMintsTooOften calls Expired with the current token before
// every request for three simulated hours: mints must stay at least
// MinInterval apart, and no token handed out may be RefreshAfter old.
func TestTokenNeverMintsTooOften(t *testing.T) {
	k := writeP8(t, t.TempDir(), tokKeyID, tokTeamID)
	start := time.Unix(1_700_000_000, 0)
	clock := newFakeClock(start)
	ts := apns.NewTokenSource(k, apns.TokenOptions{Now: clock.Now})
	var mintTimes []time.Time
	last, lastMints := "", uint64(0)
	for clock.Now().Sub(start) < 3*time.Hour {
		if last != "" {
			ts.Expired(last)
		}
		last = mustAuth(t, ts)
		info := ts.Info()
		if info.Mints != lastMints {
			lastMints = info.Mints
			mintTimes = append(mintTimes, clock.Now())
		}
		if age := clock.Now().Sub(info.IssuedAt); age >= apns.DefaultTokenRefreshAfter {
			t.Fatalf("at %v handed out a token %v old", clock.Now().Sub(start), age)
		}
		clock.Advance(10 * time.Second)
	}
	for i := 1; i < len(mintTimes); i++ {
		if d := mintTimes[i].Sub(mintTimes[i-1]); d < apns.DefaultTokenMinInterval {
			t.Errorf("mints %d and %d are %v apart, want at least %v", i-1, i, d, apns.DefaultTokenMinInterval)
		}
	}
	if want := int(3 * time.Hour / apns.DefaultTokenMinInterval); len(mintTimes) != want {
		t.Errorf("%d mints in 3 hours of constant Expired, want %d (one per MinInterval)", len(mintTimes), want)
	}
}

// TestTokenExpiredConcurrent: 50 requests get ExpiredProviderToken with the
// same token at once; each calls Expired and then Authorization.
func TestTokenExpiredConcurrent(t *testing.T) {
	tests := []struct {
		name      string
		age       time.Duration
		wantRetry bool
		wantMints uint64
	}{
		{"old enough: one new token", 25 * time.Minute, true, 2},
		{"too young: no new token", 10 * time.Minute, false, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k := writeP8(t, t.TempDir(), tokKeyID, tokTeamID)
			clock := newFakeClock(time.Now())
			ts := apns.NewTokenSource(k, apns.TokenOptions{Now: clock.Now})
			old := mustAuth(t, ts)
			clock.Advance(tc.age)

			const n = 50
			var (
				wg      sync.WaitGroup
				start   = make(chan struct{})
				retries [n]bool
				auths   [n]string
				errs    [n]error
			)
			for i := range n {
				wg.Go(func() {
					<-start
					retries[i] = ts.Expired(old)
					auths[i], errs[i] = ts.Authorization()
				})
			}
			close(start)
			wg.Wait()
			for i := range n {
				if errs[i] != nil {
					t.Fatal(errs[i])
				}
				if retries[i] != tc.wantRetry {
					t.Errorf("caller %d: Expired = %v, want %v", i, retries[i], tc.wantRetry)
				}
				if auths[i] != auths[0] {
					t.Errorf("caller %d got another token than caller 0", i)
				}
			}
			if changed := auths[0] != old; changed != tc.wantRetry {
				t.Errorf("token changed = %v, want %v", changed, tc.wantRetry)
			}
			if got := ts.Info().Mints; got != tc.wantMints {
				t.Errorf("Mints = %d, want %d", got, tc.wantMints)
			}
		})
	}
}

// TestTokenConcurrentUse runs every method at once, for the race detector.
func TestTokenConcurrentUse(t *testing.T) {
	dir := t.TempDir()
	k1 := writeP8(t, dir, tokKeyID, tokTeamID)
	k2 := writeP8(t, dir, tokKeyID2, tokTeam2)
	clock := newFakeClock(time.Now())
	ts := apns.NewTokenSource(k1, apns.TokenOptions{Now: clock.Now})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 500 {
				a, err := ts.Authorization()
				if err != nil || !strings.HasPrefix(a, "bearer ") {
					t.Errorf("Authorization = %q, %v", a, err)
					return
				}
				ts.Expired(a)
				_ = ts.Info()
			}
		})
	}
	wg.Go(func() {
		for i := range 200 {
			clock.Advance(time.Minute)
			if i%50 == 0 {
				ts.SetKey([]*apns.TokenKey{k1, k2}[i/50%2])
			}
		}
	})
	wg.Wait()
}

func TestTokenSetKey(t *testing.T) {
	dir := t.TempDir()
	a := writeP8(t, dir, tokKeyID, tokTeamID)
	b := writeP8(t, dir, tokKeyID2, tokTeam2)
	clock := newFakeClock(time.Now())
	ts := apns.NewTokenSource(a, apns.TokenOptions{Now: clock.Now})
	tokA := mustAuth(t, ts)

	clock.Advance(time.Second) // far younger than MinInterval: a new key mints anyway
	ts.SetKey(b)
	if info := ts.Info(); info.KeyID != tokKeyID2 || info.TeamID != tokTeam2 || info.KeyPath != b.Path || !info.IssuedAt.IsZero() {
		t.Errorf("Info after SetKey = %+v, want key %s/%s from %s and no token", info, tokKeyID2, tokTeam2, b.Path)
	}
	tokB := mustAuth(t, ts)
	if tokB == tokA {
		t.Fatal("SetKey: still the old key's token")
	}
	verifyIndependently(t, tokB, &b.Key.PublicKey, tokKeyID2, tokTeam2, clock.Now())
	if got := ts.Info().Mints; got != 2 {
		t.Errorf("Mints = %d, want 2", got)
	}
	if !ts.Expired(tokA) {
		t.Error("Expired(old key's token) = false, want true (it was replaced)")
	}
	if got := mustAuth(t, ts); got != tokB || ts.Info().Mints != 2 {
		t.Error("Expired(old key's token) caused a mint")
	}

	// Reloading an unchanged file keeps the token and updates Info.
	reloadedAt := clock.Now().Add(time.Minute)
	b2, err := apns.LoadTokenKey(b.Path, tokKeyID2, tokTeam2, reloadedAt)
	if err != nil {
		t.Fatal(err)
	}
	ts.SetKey(b2)
	if got := mustAuth(t, ts); got != tokB {
		t.Error("SetKey with the same key changed the token")
	}
	if info := ts.Info(); !info.KeyLoadedAt.Equal(reloadedAt) || info.Mints != 2 {
		t.Errorf("Info after same-key SetKey = %+v, want KeyLoadedAt %v and 2 mints", info, reloadedAt)
	}

	// The same key material under another team id is a new token family.
	b3, err := apns.LoadTokenKey(b.Path, tokKeyID2, tokTeamID, clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	ts.SetKey(b3)
	got := mustAuth(t, ts)
	verifyIndependently(t, got, &b.Key.PublicKey, tokKeyID2, tokTeamID, clock.Now())
	if ts.Info().Mints != 3 {
		t.Errorf("Mints = %d, want 3", ts.Info().Mints)
	}
}

func TestTokenOptionsClamped(t *testing.T) {
	k := writeP8(t, t.TempDir(), tokKeyID, tokTeamID)
	start := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name string
		o    apns.TokenOptions
		// sameBefore: still the first token at this age; newAt: a new one.
		sameBefore, newAt time.Duration
	}{
		{"defaults", apns.TokenOptions{}, 50*time.Minute - time.Second, 50 * time.Minute},
		{"custom", apns.TokenOptions{RefreshAfter: 30 * time.Minute, MinInterval: 5 * time.Minute}, 30*time.Minute - time.Second, 30 * time.Minute},
		{"capped below an hour", apns.TokenOptions{RefreshAfter: 2 * time.Hour}, 59*time.Minute - time.Second, 59 * time.Minute},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock(start)
			tc.o.Now = clock.Now
			ts := apns.NewTokenSource(k, tc.o)
			first := mustAuth(t, ts)
			clock.Set(start.Add(tc.sameBefore))
			if mustAuth(t, ts) != first {
				t.Errorf("new token at %v", tc.sameBefore)
			}
			clock.Set(start.Add(tc.newAt))
			if mustAuth(t, ts) == first {
				t.Errorf("no new token at %v", tc.newAt)
			}
		})
	}
}

func pemFile(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func TestLoadTokenKey(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

	p256, p8, err := pki.NewP8Key()
	if err != nil {
		t.Fatal(err)
	}
	sec1, err := x509.MarshalECPrivateKey(p256)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384p8, err := x509.MarshalPKCS8PrivateKey(p384)
	if err != nil {
		t.Fatal(err)
	}
	p384sec1, err := x509.MarshalECPrivateKey(p384)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaP8, err := x509.MarshalPKCS8PrivateKey(rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edP8, err := x509.MarshalPKCS8PrivateKey(edKey)
	if err != nil {
		t.Fatal(err)
	}
	p8DER, _ := pem.Decode(p8)
	ca, err := pki.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		file       string // name under dir; "" means no file is written
		data       []byte
		keyID      string
		teamID     string
		kind       error  // nil: success
		msg        string // substring of the message
		wantPubKey *ecdsa.PublicKey
	}{
		{"p8", "AuthKey_ABC123DEFG.p8", p8, tokKeyID, tokTeamID, nil, "", &p256.PublicKey},
		{"SEC 1 P-256 accepted", "sec1.pem", pemFile("EC PRIVATE KEY", sec1), tokKeyID, tokTeamID, nil, "", &p256.PublicKey},
		{"p8 after a certificate", "combined.pem", append(append([]byte(nil), ca.CertPEM...), p8...), tokKeyID, tokTeamID, nil, "", &p256.PublicKey},
		{"missing file", "", nil, tokKeyID, tokTeamID, apns.ErrUnreadable, "cannot read", nil},
		{"directory", "adir", nil, tokKeyID, tokTeamID, apns.ErrUnreadable, "cannot read", nil},
		{"empty", "empty.p8", []byte("\n"), tokKeyID, tokTeamID, apns.ErrBadTokenKey, "not PEM: the file is empty", nil},
		{"not PEM", "junk.p8", []byte("hello, this is not a key\n"), tokKeyID, tokTeamID, apns.ErrBadTokenKey, "not PEM", nil},
		{"DER", "key.der", p8DER.Bytes, tokKeyID, tokTeamID, apns.ErrBadTokenKey, "DER key; convert with: openssl pkey -inform der", nil},
		{"certificate only", "cert.pem", ca.CertPEM, tokKeyID, tokTeamID, apns.ErrBadTokenKey, "(the file holds: CERTIFICATE)", nil},
		{"PRIVATE KEY not PKCS#8", "bad.p8", pemFile("PRIVATE KEY", sec1), tokKeyID, tokTeamID, apns.ErrBadTokenKey, "not a valid PKCS#8 private key", nil},
		{"EC PRIVATE KEY not SEC 1", "bad-sec1.pem", pemFile("EC PRIVATE KEY", []byte("garbage")), tokKeyID, tokTeamID, apns.ErrBadTokenKey, "not a valid SEC 1", nil},
		{"RSA PKCS#8", "rsa.p8", pemFile("PRIVATE KEY", rsaP8), tokKeyID, tokTeamID, apns.ErrBadTokenKey, "is an RSA key, not an EC key", nil},
		{"RSA PKCS#1", "rsa1.pem", pemFile("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey)), tokKeyID, tokTeamID, apns.ErrBadTokenKey, "is an RSA key", nil},
		{"Ed25519", "ed.p8", pemFile("PRIVATE KEY", edP8), tokKeyID, tokTeamID, apns.ErrBadTokenKey, "is an Ed25519 key, not an EC key", nil},
		{"P-384 PKCS#8", "p384.p8", pemFile("PRIVATE KEY", p384p8), tokKeyID, tokTeamID, apns.ErrBadTokenKey, "curve P-384, not P-256", nil},
		{"P-384 SEC 1", "p384.pem", pemFile("EC PRIVATE KEY", p384sec1), tokKeyID, tokTeamID, apns.ErrBadTokenKey, "curve P-384, not P-256", nil},
		{"two keys", "two.p8", append(append([]byte(nil), p8...), p8...), tokKeyID, tokTeamID, apns.ErrBadTokenKey, "more than one private key", nil},
		{"encrypted", "enc.p8", pemFile("ENCRYPTED PRIVATE KEY", p384p8), tokKeyID, tokTeamID, apns.ErrEncryptedKey, "encrypted", nil},
		{"short key id", "AuthKey_ABC123DEFG.p8", p8, "ABC123", tokTeamID, apns.ErrBadKeyID, `key id "ABC123" must be 10 characters of A-Z and 0-9`, nil},
		{"lowercase key id", "AuthKey_ABC123DEFG.p8", p8, "abc123defg", tokTeamID, apns.ErrBadKeyID, "the file name suggests ABC123DEFG", nil},
		{"empty key id", "p8.p8", p8, "", tokTeamID, apns.ErrBadKeyID, `key id ""`, nil},
		{"bad team id", "AuthKey_ABC123DEFG.p8", p8, tokKeyID, "TEAM-12345", apns.ErrBadTeamID, `team id "TEAM-12345" must be 10 characters`, nil},
		{"long team id", "AuthKey_ABC123DEFG.p8", p8, tokKeyID, "TEAM1234567", apns.ErrBadTeamID, "team id", nil},
	}
	sentinels := []error{apns.ErrUnreadable, apns.ErrEncryptedKey, apns.ErrBadTokenKey, apns.ErrBadKeyID, apns.ErrBadTeamID}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "missing.p8")
			if tc.file != "" {
				path = filepath.Join(dir, tc.file)
				switch tc.file {
				case "adir":
					if err := os.MkdirAll(path, 0o700); err != nil {
						t.Fatal(err)
					}
				default:
					if err := os.WriteFile(path, tc.data, 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}
			k, err := apns.LoadTokenKey(path, tc.keyID, tc.teamID, now)
			if tc.kind == nil {
				if err != nil {
					t.Fatalf("LoadTokenKey: %v", err)
				}
				pub, _ := x509.MarshalPKIXPublicKey(tc.wantPubKey)
				sum := sha256.Sum256(pub)
				if !k.Key.PublicKey.Equal(tc.wantPubKey) || k.KeyID != tc.keyID || k.TeamID != tc.teamID ||
					k.Path != path || !k.LoadedAt.Equal(now) || k.Fingerprint != hex.EncodeToString(sum[:]) {
					t.Errorf("got %+v", k)
				}
				return
			}
			if err == nil {
				t.Fatal("LoadTokenKey succeeded, want an error")
			}
			msg := err.Error()
			t.Log(msg)
			var ce *apns.CredentialError
			if !errors.As(err, &ce) || ce.Path != path {
				t.Errorf("error %T is not a *CredentialError with Path %s", err, path)
			}
			for _, s := range sentinels {
				if got, want := errors.Is(err, s), errors.Is(tc.kind, s); got != want {
					t.Errorf("errors.Is(err, %v) = %v, want %v", s, got, want)
				}
			}
			if tc.name == "missing file" && !errors.Is(err, fs.ErrNotExist) {
				t.Error("missing file: errors.Is(err, fs.ErrNotExist) = false")
			}
			if !strings.Contains(msg, path) {
				t.Errorf("message %q does not name %s", msg, path)
			}
			if !strings.Contains(msg, tc.msg) {
				t.Errorf("message %q does not contain %q", msg, tc.msg)
			}
			for _, line := range bytes.Split(tc.data, []byte("\n")) {
				if len(line) >= 16 && !bytes.HasPrefix(line, []byte("-----")) && strings.Contains(msg, string(line[:16])) {
					t.Errorf("message %q contains key bytes", msg)
				}
			}
		})
	}
}

// TestTokenClient drives apns.Client in token mode against the stand-in,
// which checks tokens with ES256Verifier.
func TestTokenClient(t *testing.T) {
	dir := t.TempDir()
	good := writeP8(t, dir, tokKeyID, tokTeamID)
	srv, err := apnstest.New(apnstest.Options{TokenKeys: map[string]*ecdsa.PublicKey{tokKeyID: &good.Key.PublicKey}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	client := func(t *testing.T, ts *apns.TokenSource) *apns.Client {
		t.Helper()
		c, err := apns.NewClient(apns.ClientOptions{
			Endpoint:      srv.URL,
			RootCAs:       srv.RootCAs(),
			Authorization: ts.Authorization,
			MinBackoff:    20 * time.Millisecond,
			MaxBackoff:    200 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		c.Start()
		t.Cleanup(c.Close)
		return c
	}
	send := func(t *testing.T, c *apns.Client) *apns.Response {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n := &apns.Notification{
			DeviceToken: strings.Repeat("ab", 32),
			Topic:       "com.example.app",
			PushType:    apns.PushTypeAlert,
			Payload:     []byte(`{"aps":{"alert":"hi"}}`),
		}
		res, err := c.Send(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}

	t.Run("good key", func(t *testing.T) {
		ts := apns.NewTokenSource(good, apns.TokenOptions{})
		res := send(t, client(t, ts))
		if res.StatusCode != 200 || res.Reason != "" {
			t.Fatalf("got %d %q, want 200", res.StatusCode, res.Reason)
		}
		reqs := srv.Requests()
		if len(reqs) == 0 || reqs[len(reqs)-1].Header.Get("authorization") != mustAuth(t, ts) {
			t.Error("the server did not get the source's token")
		}
	})

	t.Run("wrong key", func(t *testing.T) {
		wrong := writeP8(t, t.TempDir(), tokKeyID, tokTeamID) // same kid, other key
		res := send(t, client(t, apns.NewTokenSource(wrong, apns.TokenOptions{})))
		if res.StatusCode != 403 || res.Reason != apns.ReasonInvalidProviderToken {
			t.Fatalf("got %d %q, want 403 InvalidProviderToken", res.StatusCode, res.Reason)
		}
	})

	// The host clock is 70 minutes behind: Apple calls the brand-new token
	// expired. Expired refuses to mint until MinInterval has passed on the
	// local clock; then the new token (iat 50 minutes ago) is accepted.
	t.Run("clock behind", func(t *testing.T) {
		clock := newFakeClock(time.Now().Add(-70 * time.Minute))
		ts := apns.NewTokenSource(good, apns.TokenOptions{Now: clock.Now})
		c := client(t, ts)
		sent := mustAuth(t, ts)
		res := send(t, c)
		if res.StatusCode != 403 || res.Reason != apns.ReasonExpiredProviderToken {
			t.Fatalf("got %d %q, want 403 ExpiredProviderToken", res.StatusCode, res.Reason)
		}
		if ts.Expired(sent) {
			t.Fatal("Expired(brand-new token) = true, want false")
		}
		clock.Advance(apns.DefaultTokenMinInterval)
		if !ts.Expired(sent) {
			t.Fatal("Expired(20-minute-old token) = false, want true")
		}
		if res := send(t, c); res.StatusCode != 200 {
			t.Fatalf("after refresh: got %d %q, want 200", res.StatusCode, res.Reason)
		}
		if got := ts.Info().Mints; got != 2 {
			t.Errorf("Mints = %d, want 2", got)
		}
	})
}

// TestTokenHeaderIsJSON guards the hand-built JSON: it must decode to the
// same values json.Unmarshal sees.
func TestTokenHeaderIsJSON(t *testing.T) {
	k := writeP8(t, t.TempDir(), tokKeyID, tokTeamID)
	p := decodeBearer(t, mustAuth(t, apns.NewTokenSource(k, apns.TokenOptions{})))
	var h map[string]any
	var c map[string]any
	if err := json.Unmarshal(p.header, &h); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(p.claims, &c); err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 || h["alg"] != "ES256" || h["kid"] != tokKeyID || len(c) != 2 || c["iss"] != tokTeamID {
		t.Errorf("header %v claims %v", h, c)
	}
	if _, ok := c["iat"].(float64); !ok {
		t.Errorf("iat %v is not a number", c["iat"])
	}
}

// BenchmarkTokenAuthorization measures the hot path: a cached token read by
// many goroutines at once.
func BenchmarkTokenAuthorization(b *testing.B) {
	_, pemData, err := pki.NewP8Key()
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "AuthKey_"+tokKeyID+".p8")
	if err := os.WriteFile(path, pemData, 0o600); err != nil {
		b.Fatal(err)
	}
	k, err := apns.LoadTokenKey(path, tokKeyID, tokTeamID, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	ts := apns.NewTokenSource(k, apns.TokenOptions{})
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := ts.Authorization(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
