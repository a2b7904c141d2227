package apns

import (
	"regexp"
	"strings"
	"testing"
)

// The regexps that ValidUUID, validAppleID and authKeyID replaced. They are
// the oracle: each check must accept exactly what its regexp matches, and
// authKeyID must return the regexp's capture group. (Go's $ without (?m)
// matches only at the end of the text, so a trailing "\n" is refused.)
var (
	uuidOracle        = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	appleIDOracle     = regexp.MustCompile(`^[A-Z0-9]{10}$`)
	authKeyNameOracle = regexp.MustCompile(`^AuthKey_([A-Za-z0-9]+)\.p8$`)
)

// checkNames compares the three checks with their regexps on s.
func checkNames(t *testing.T, s string) {
	t.Helper()
	if got, want := ValidUUID(s), uuidOracle.MatchString(s); got != want {
		t.Fatalf("ValidUUID(%q) = %v, regexp says %v", s, got, want)
	}
	if got, want := validAppleID(s), appleIDOracle.MatchString(s); got != want {
		t.Fatalf("validAppleID(%q) = %v, regexp says %v", s, got, want)
	}
	id, ok := authKeyID(s)
	m := authKeyNameOracle.FindStringSubmatch(s)
	if ok != (m != nil) || ok && id != m[1] || !ok && id != "" {
		t.Fatalf("authKeyID(%q) = %q, %v; regexp says %q", s, id, ok, m)
	}
}

const goodUUID = "123e4567-e89b-42d3-a456-426614174000"

var nameEdgeCases = []string{
	"", " ", "\n", "\x00", "a", "é", "\xff", "\uFFFD",
	// UUIDs: lowercase only, dashes at 8, 13, 18, 23, 36 characters
	goodUUID, strings.ToUpper(goodUUID), "123E4567-e89b-42d3-a456-426614174000",
	goodUUID + "\n", "\n" + goodUUID, goodUUID + "0", goodUUID[:35], goodUUID[1:],
	"123e4567e89b42d3a456426614174000", "123e4567-e89b-42d3-a456-42661417400g",
	"123e4567-e89b-42d3-a4564-26614174000", "{123e4567-e89b-42d3-a456-426614174000}",
	"00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff",
	"FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", "ffffffff-ffff-ffff-ffff-fffffffffffF",
	"------------------------------------", "123e4567-e89b-42d3-a456-42661417400é",
	// key and team ids: 10 of A-Z 0-9; lengths 9, 10, 11
	"ABC123DEFG", "abc123defg", "ABC123DEF", "ABC123DEFGH", "ABC123DEF_", "ABC-123DEF",
	"ABC123DEFG\n", "ABC123DEFé", "ABC12\x003DEF", "0000000000", "ZZZZZZZZZZ",
	// key file names
	"AuthKey_ABC123DEFG.p8", "AuthKey_abc123defg.p8", "AuthKey_A.p8", "AuthKey_.p8",
	"AuthKey_ABC.DEF.p8", "AuthKey_ABC123DEFG.p8\n", "AuthKey_ABC123DEFG.P8", "authkey_ABC123DEFG.p8",
	"AuthKey_ABC123DEFG.p8.bak", "xAuthKey_ABC123DEFG.p8", "AuthKey_ABC_123.p8", "AuthKey_ABC-123.p8",
	"AuthKey_ABCé.p8", "AuthKey_", ".p8", "AuthKey_p8", "AuthKey.p8", "AuthKey_ABC123DEFGp8",
}

func TestNameChecksEdgeCases(t *testing.T) {
	for _, s := range nameEdgeCases {
		checkNames(t, s)
	}
	// Some must be accepted, so the comparison is not only over refusals.
	if !ValidUUID(goodUUID) || !validAppleID("ABC123DEFG") {
		t.Fatal("a valid UUID or id is refused")
	}
	if id, ok := authKeyID("AuthKey_abc123DEFG.p8"); !ok || id != "abc123DEFG" {
		t.Fatalf(`authKeyID("AuthKey_abc123DEFG.p8") = %q, %v`, id, ok)
	}
}

// nameAlphabet has one symbol of each kind the three languages tell apart,
// plus chunks (the file name's parts, 5-character ids) so that short walks
// reach the 10- and 36-character lengths.
var nameAlphabet = []string{
	"A", "F", "Z", "a", "f", "g", "z", "0", "9", "-", ".", "_", "\n", "é", "\xff",
	"AuthKey_", ".p8", "p8", "ABCDE", "0Z9A5", "a1b2c3d4", "-e89b", "-e89b-e89b", "-426614174000",
}

// TestNameChecksExhaustive compares the checks with the regexps on every
// string of up to 4 symbols of nameAlphabet (346,201 strings; they include
// valid UUIDs, ids and key file names and their near misses).
func TestNameChecksExhaustive(t *testing.T) {
	n, uuids, ids, files := 0, 0, 0, 0
	var walk func(prefix string, depth int)
	walk = func(prefix string, depth int) {
		n++
		checkNames(t, prefix)
		if ValidUUID(prefix) {
			uuids++
		}
		if validAppleID(prefix) {
			ids++
		}
		if _, ok := authKeyID(prefix); ok {
			files++
		}
		if depth == 0 {
			return
		}
		for _, sym := range nameAlphabet {
			walk(prefix+sym, depth-1)
		}
	}
	walk("", 4)
	if want := 1 + 24 + 24*24 + 24*24*24 + 24*24*24*24; n != want {
		t.Fatalf("walked %d strings, want %d", n, want)
	}
	if uuids == 0 || ids == 0 || files == 0 {
		t.Fatalf("the walk accepted %d UUIDs, %d ids, %d key file names; want some of each", uuids, ids, files)
	}
	t.Logf("%d strings; accepted: %d UUIDs, %d ids, %d key file names", n, uuids, ids, files)
}

// TestNameChecksMutations compares the checks with the regexps on every
// edge case with one symbol of nameAlphabet's single characters replaced,
// inserted or deleted at each position.
func TestNameChecksMutations(t *testing.T) {
	var chars []string
	for _, sym := range nameAlphabet {
		if len(sym) == 1 || sym == "é" {
			chars = append(chars, sym)
		}
	}
	for _, s := range nameEdgeCases {
		for i := 0; i <= len(s); i++ {
			if i < len(s) {
				checkNames(t, s[:i]+s[i+1:])
			}
			for _, sym := range chars {
				checkNames(t, s[:i]+sym+s[i:])
				if i < len(s) {
					checkNames(t, s[:i]+sym+s[i+1:])
				}
			}
		}
	}
}

// FuzzNameChecks compares the checks with their regexps on arbitrary input
// (scripts/test.sh runs it briefly).
func FuzzNameChecks(f *testing.F) {
	for _, s := range nameEdgeCases {
		f.Add(s)
	}
	f.Fuzz(checkNames)
}
