package apnstest

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"strings"
	"time"

	"github.com/apnsd/apnsd/internal/apns"
)

// TokenMaxAge is how old (by its iat claim) a provider token may be before
// Apple answers 403 ExpiredProviderToken.
const TokenMaxAge = time.Hour

// tokenClockSkew is how far in the future an iat may lie before the token is
// called invalid.
const tokenClockSkew = 5 * time.Minute

// ES256Verifier returns a token check for Options.VerifyToken that verifies a
// provider token the way Apple describes token authentication: a JWT whose
// header is {"alg":"ES256","kid":...} and whose claims carry "iss" (team id)
// and "iat" (seconds), signed with the .p8 key whose public half is
// keys[kid], the signature being raw r‖s. It answers
//
//   - "" for a good token;
//   - ExpiredProviderToken when iat is more than [TokenMaxAge] ago;
//   - InvalidProviderToken for anything else wrong (malformed, alg not
//     ES256, unknown kid, bad signature, missing iss/iat, iat in the
//     future).
//
// Per-connection rules (TooManyProviderTokenUpdates, UnrelatedKeyIdInToken)
// are not checked.
func ES256Verifier(keys map[string]*ecdsa.PublicKey) func(jwt string) string {
	return func(jwt string) string {
		return verifyES256(keys, jwt, time.Now())
	}
}

func verifyES256(keys map[string]*ecdsa.PublicKey, jwt string, now time.Time) string {
	const invalid = apns.ReasonInvalidProviderToken
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return invalid
	}
	var hdr struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	if !decodeSegment(parts[0], &hdr) || hdr.Alg != "ES256" || hdr.Kid == "" {
		return invalid
	}
	key := keys[hdr.Kid]
	if key == nil {
		return invalid
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		return invalid
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	r := new(big.Int).SetBytes(sig[:32])
	sv := new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(key, digest[:], r, sv) {
		return invalid
	}
	var claims struct {
		Iss string   `json:"iss"`
		Iat *float64 `json:"iat"`
	}
	if !decodeSegment(parts[1], &claims) || claims.Iss == "" || claims.Iat == nil {
		return invalid
	}
	iat := time.Unix(int64(*claims.Iat), 0)
	if iat.After(now.Add(tokenClockSkew)) {
		return invalid
	}
	if now.Sub(iat) > TokenMaxAge {
		return apns.ReasonExpiredProviderToken
	}
	return ""
}

func decodeSegment(seg string, v any) bool {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return false
	}
	return json.Unmarshal(b, v) == nil
}

// MakeToken signs a provider token the way Apple expects one (ES256, header
// kid, claims iss and iat). It is meant for tests of the stand-in; the
// daemon has its own signer.
func MakeToken(key *ecdsa.PrivateKey, keyID, teamID string, iat time.Time) (string, error) {
	enc := base64.RawURLEncoding
	h, _ := json.Marshal(map[string]string{"alg": "ES256", "kid": keyID})
	c, _ := json.Marshal(map[string]any{"iss": teamID, "iat": iat.Unix()})
	signing := enc.EncodeToString(h) + "." + enc.EncodeToString(c)
	digest := sha256.Sum256([]byte(signing))
	r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signing + "." + enc.EncodeToString(sig), nil
}
