package apns

import (
	"bytes"
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
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Token timing defaults; see TokenOptions.
const (
	DefaultTokenRefreshAfter = 50 * time.Minute
	DefaultTokenMinInterval  = 20 * time.Minute
	// maxTokenRefresh caps RefreshAfter: Apple answers
	// ExpiredProviderToken to a token older than an hour.
	maxTokenRefresh = 59 * time.Minute
)

// TokenKey is a loaded .p8 signing key for token-based authentication. It
// is immutable once returned; share it freely between goroutines.
type TokenKey struct {
	// Key is the P-256 private key.
	Key *ecdsa.PrivateKey
	// KeyID is the 10-character key id (the JWT "kid"), TeamID the
	// 10-character team id (the JWT "iss").
	KeyID, TeamID string
	// Path is the file the key was loaded from.
	Path string
	// Fingerprint is the lowercase hex SHA-256 of the public key's PKIX
	// (SubjectPublicKeyInfo) DER, the same as
	// `openssl pkey -in AuthKey.p8 -pubout -outform der | sha256sum`.
	Fingerprint string
	// LoadedAt is the now passed to LoadTokenKey.
	LoadedAt time.Time
}

// sameKey reports whether k and o sign the same token family: same key,
// key id and team id.
func (k *TokenKey) sameKey(o *TokenKey) bool {
	return k.Key.PublicKey.Equal(&o.Key.PublicKey) && k.KeyID == o.KeyID && k.TeamID == o.TeamID
}

// validAppleID reports whether s is a key or team id: ^[A-Z0-9]{10}$.
// This and authKeyID are hand-written so that apnsd does not link regexp;
// names_test.go checks them against the regexps.
func validAppleID(s string) bool {
	if len(s) != 10 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// authKeyID returns the id in the name Apple gives a downloaded key file,
// ^AuthKey_([A-Za-z0-9]+)\.p8$, and whether name is such a name.
func authKeyID(name string) (string, bool) {
	const prefix, suffix = "AuthKey_", ".p8"
	if len(name) <= len(prefix)+len(suffix) || name[:len(prefix)] != prefix || name[len(name)-len(suffix):] != suffix {
		return "", false
	}
	id := name[len(prefix) : len(name)-len(suffix)]
	for i := 0; i < len(id); i++ {
		if c := id[i]; (c < 'A' || c > 'Z') && (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return "", false
		}
	}
	return id, true
}

// LoadTokenKey reads the .p8 key at path and checks it with keyID and teamID.
// Apple ships the key as a PKCS#8 PEM ("BEGIN PRIVATE KEY") holding an ECDSA
// P-256 key; a SEC 1 PEM ("BEGIN EC PRIVATE KEY") of a P-256 key, which
// `openssl ec` produces from it, is accepted too. keyID and teamID must be
// 10 characters of A-Z and 0-9.
//
// Every error is a *CredentialError naming the file; test its kind with
// errors.Is and ErrUnreadable, ErrEncryptedKey, ErrBadTokenKey, ErrBadKeyID
// or ErrBadTeamID. It only reads the file and is safe to call concurrently.
func LoadTokenKey(path, keyID, teamID string, now time.Time) (*TokenKey, error) {
	if !validAppleID(keyID) {
		hint := ""
		if id, ok := authKeyID(filepath.Base(path)); ok && validAppleID(id) {
			hint = fmt.Sprintf("; the file name suggests %s", id)
		}
		return nil, credErr(path, ErrBadKeyID, nil, "token key %s: key id %q must be 10 characters of A-Z and 0-9 (the Key ID shown in Apple Developer, Keys%s)", path, keyID, hint)
	}
	if !validAppleID(teamID) {
		return nil, credErr(path, ErrBadTeamID, nil, "token key %s: team id %q must be 10 characters of A-Z and 0-9 (the Team ID shown in Apple Developer, Membership)", path, teamID)
	}
	data, err := readCredFile("token key", path)
	if err != nil {
		return nil, err
	}
	key, err := parseP8(path, data)
	if err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil { // cannot happen for a P-256 key
		return nil, credErr(path, ErrBadTokenKey, err, "token key %s: cannot encode the public key", path)
	}
	sum := sha256.Sum256(pub)
	return &TokenKey{
		Key:         key,
		KeyID:       keyID,
		TeamID:      teamID,
		Path:        path,
		Fingerprint: hex.EncodeToString(sum[:]),
		LoadedAt:    now,
	}, nil
}

// parseP8 finds the one private key PEM block in data and checks that it is
// an ECDSA P-256 key. Errors never include key bytes.
func parseP8(path string, data []byte) (*ecdsa.PrivateKey, error) {
	bad := func(cause error, format string, args ...any) error {
		return credErr(path, ErrBadTokenKey, cause, "token key %s: "+format, append([]any{path}, args...)...)
	}
	const want = "token auth needs the ECDSA P-256 .p8 key downloaded from Apple Developer, Keys"
	var key *ecdsa.PrivateKey
	for _, kb := range privateKeyBlocks(data) {
		n, b := kb.n, kb.b
		if encryptedKey(b) {
			return nil, credErr(path, ErrEncryptedKey, nil, "token key %s: the private key is encrypted; Apple's .p8 keys are not, decrypt it with: openssl pkey -in %s -out AuthKey.p8 (then chmod 600 and use that)", path, path)
		}
		if key != nil {
			return nil, bad(nil, "more than one private key in the file")
		}
		var (
			k   any
			err error
		)
		switch b.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				return nil, bad(err, "PEM block %d (PRIVATE KEY) is not a valid PKCS#8 private key", n)
			}
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(b.Bytes)
			if err != nil {
				return nil, bad(err, "PEM block %d (EC PRIVATE KEY) is not a valid SEC 1 EC private key", n)
			}
		case "RSA PRIVATE KEY":
			return nil, bad(nil, "PEM block %d is an RSA key; %s", n, want)
		default:
			return nil, bad(nil, "PEM block %d is a %s, not a PKCS#8 PRIVATE KEY; %s", n, b.Type, want)
		}
		ek, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			kind := fmt.Sprintf("a %T", k)
			switch k.(type) {
			case *rsa.PrivateKey:
				kind = "an RSA key"
			case ed25519.PrivateKey:
				kind = "an Ed25519 key"
			}
			return nil, bad(nil, "PEM block %d (%s) is %s, not an EC key; %s", n, b.Type, kind, want)
		}
		if ek.Curve != elliptic.P256() {
			return nil, bad(nil, "PEM block %d (%s) is an EC key on curve %s, not P-256; %s", n, b.Type, ek.Curve.Params().Name, want)
		}
		key = ek
	}
	if key != nil {
		return key, nil
	}
	if types := blockTypes(data); len(types) > 0 {
		return nil, bad(nil, "no private key PEM block found (the file holds: %s); %s", strings.Join(types, ", "), want)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, bad(nil, "not PEM: the file is empty")
	}
	if _, err := x509.ParsePKCS8PrivateKey(data); err == nil {
		return nil, bad(nil, "not PEM: it is a DER key; convert with: openssl pkey -inform der -in %s -out %s", path, pemName(path))
	}
	return nil, bad(nil, "not PEM: no \"-----BEGIN PRIVATE KEY-----\" block found; %s", want)
}

// TokenOptions configures a TokenSource. The zero value uses the defaults.
type TokenOptions struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// RefreshAfter: a token this old is replaced by a new one on the next
	// Authorization (default DefaultTokenRefreshAfter, 50 minutes; Apple
	// refuses tokens older than an hour, so values above 59 minutes are
	// lowered to 59 minutes).
	RefreshAfter time.Duration
	// MinInterval: Expired never drops a token younger than this (default
	// DefaultTokenMinInterval, 20 minutes), since Apple answers
	// TooManyProviderTokenUpdates to tokens that change more often. It is
	// lowered to RefreshAfter if larger.
	MinInterval time.Duration
}

// TokenInfo describes a TokenSource's key and current token, for status
// output.
type TokenInfo struct {
	KeyID, TeamID string
	// KeyPath, KeyFingerprint and KeyLoadedAt describe the current key.
	KeyPath        string
	KeyFingerprint string
	KeyLoadedAt    time.Time
	// IssuedAt is the "iat" of the current token; zero when there is none
	// (none minted yet, or dropped by Expired or SetKey: the next
	// Authorization mints one).
	IssuedAt time.Time
	// Mints counts the tokens signed since NewTokenSource, all keys.
	Mints uint64
}

// token is one minted JWT. It is immutable.
type token struct {
	auth     string    // "bearer <jwt>"
	iat      time.Time // the "iat" claim, whole seconds
	mintedAt time.Time // s.now() when minted, for the schedule
}

// TokenSource mints and caches the ES256 JWT ("provider token") of one
// key. All connections using the key share its one token, so Apple sees a
// token change at most every MinInterval on any connection.
//
// All methods are safe for concurrent use. Authorization, called for every
// request, is lock-free while the cached token is younger than
// RefreshAfter; minting (at most once per RefreshAfter, or after Expired or
// SetKey) takes mu, so concurrent callers wait for one signature instead
// of each making one.
type TokenSource struct {
	now                       func() time.Time
	refreshAfter, minInterval time.Duration

	// cur is the current token, nil when the next Authorization must mint.
	// It is read without mu; it is only stored with mu held.
	cur atomic.Pointer[token]

	// mu serializes minting and key changes, and guards the fields that
	// follow.
	mu    sync.Mutex
	key   *TokenKey
	mints uint64
}

// NewTokenSource returns a TokenSource for k, which must not be nil. No
// token is minted until the first Authorization.
func NewTokenSource(k *TokenKey, o TokenOptions) *TokenSource {
	if k == nil {
		panic("apns: NewTokenSource with a nil key")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	setDefault(&o.RefreshAfter, DefaultTokenRefreshAfter)
	setDefault(&o.MinInterval, DefaultTokenMinInterval)
	o.RefreshAfter = min(o.RefreshAfter, maxTokenRefresh)
	o.MinInterval = min(o.MinInterval, o.RefreshAfter)
	// Token age is wall-clock age, as Apple judges iat: Round(0) drops the
	// monotonic reading, which stops while a VM is paused and would make
	// an old token look young.
	clock := o.Now
	wall := func() time.Time { return clock().Round(0) }
	return &TokenSource{now: wall, refreshAfter: o.RefreshAfter, minInterval: o.MinInterval, key: k}
}

// Authorization returns the authorization header value, "bearer <jwt>". It
// returns the cached token while it is younger than RefreshAfter, and mints
// a new one when there is none or it is older. Its signature is
// ClientOptions.Authorization's. An error (the system's random source
// failing) leaves the source unchanged; the next call tries again.
func (s *TokenSource) Authorization() (string, error) {
	if t := s.cur.Load(); t != nil && s.now().Sub(t.mintedAt) < s.refreshAfter {
		return t.auth, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if t := s.cur.Load(); t != nil && now.Sub(t.mintedAt) < s.refreshAfter {
		return t.auth, nil // another caller minted while we waited
	}
	t, err := mintToken(s.key, now)
	if err != nil {
		return "", err
	}
	s.mints++
	s.cur.Store(t)
	return t.auth, nil
}

// Expired is called after APNs answered 403 ExpiredProviderToken to a
// request that carried rejected (the authorization header value sent). It
// reports whether retrying with a fresh Authorization is worthwhile:
//
//   - rejected is the current token and at least MinInterval old: the token
//     is dropped, the next Authorization mints a new one, and Expired
//     returns true;
//   - rejected is the current token but younger than MinInterval: nothing
//     changes and Expired returns false, since a new token now would get
//     429 TooManyProviderTokenUpdates. Apple calling a young token expired
//     usually means this host's clock is behind; report it rather than
//     retry;
//   - rejected is no longer current (another caller already refreshed or
//     dropped it, or SetKey replaced the key): true, without minting.
func (s *TokenSource) Expired(rejected string) (retry bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.cur.Load()
	if t == nil || t.auth != rejected {
		return true
	}
	if s.now().Sub(t.mintedAt) < s.minInterval {
		return false
	}
	s.cur.Store(nil)
	return true
}

// SetKey replaces the signing key (hot reload). If k is a different key, or
// has another key id or team id, the current token is dropped and the next
// Authorization mints with k at once, whatever the age of the old token:
// a new key starts a new token family, and the caller is expected to rotate
// its connections. If k is the same key (a reload of an unchanged file),
// only Info's key path and load time change and the token is kept. k must
// not be nil. Requests already holding the old token's value may still send
// it.
func (s *TokenSource) SetKey(k *TokenKey) {
	if k == nil {
		panic("apns: TokenSource.SetKey with a nil key")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	same := s.key.sameKey(k)
	s.key = k
	if !same {
		s.cur.Store(nil)
	}
}

// Info returns the current key and token's description.
func (s *TokenSource) Info() TokenInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := TokenInfo{
		KeyID:          s.key.KeyID,
		TeamID:         s.key.TeamID,
		KeyPath:        s.key.Path,
		KeyFingerprint: s.key.Fingerprint,
		KeyLoadedAt:    s.key.LoadedAt,
		Mints:          s.mints,
	}
	if t := s.cur.Load(); t != nil {
		i.IssuedAt = t.iat
	}
	return i
}

// mintToken signs a provider token with k, issued at now: header
// {"alg":"ES256","kid":k.KeyID}, claims {"iss":k.TeamID,"iat":now}, and the
// JWS ES256 signature, r‖s as two 32-byte big-endian numbers.
func mintToken(k *TokenKey, now time.Time) (*token, error) {
	// KeyID and TeamID are [A-Z0-9]{10} (LoadTokenKey checks), so plain
	// formatting is valid JSON; Marshal keeps it so for hand-made keys.
	kid, _ := json.Marshal(k.KeyID)
	iss, _ := json.Marshal(k.TeamID)
	iat := now.Unix()
	enc := base64.RawURLEncoding
	header := enc.EncodeToString(fmt.Appendf(nil, `{"alg":"ES256","kid":%s}`, kid))
	claims := enc.EncodeToString(fmt.Appendf(nil, `{"iss":%s,"iat":%d}`, iss, iat))
	signing := header + "." + claims
	digest := sha256.Sum256([]byte(signing))
	r, sv, err := ecdsa.Sign(rand.Reader, k.Key, digest[:])
	if err != nil {
		return nil, fmt.Errorf("signing provider token with key %s: %w", k.KeyID, err)
	}
	var sig [64]byte
	r.FillBytes(sig[:32])
	sv.FillBytes(sig[32:])
	return &token{
		auth:     "bearer " + signing + "." + enc.EncodeToString(sig[:]),
		iat:      time.Unix(iat, 0),
		mintedAt: now,
	}, nil
}
