package config

import (
	"regexp"
	"strings"
	"testing"
)

// The regexps the hand-written name checks in validate.go replaced. They are
// the oracle: each check must accept exactly the strings its regexp matches.
// (Go's $ without (?m) matches only at the end of the text, so "a\n" is
// refused by both.)
var nameChecks = []struct {
	name  string
	re    *regexp.Regexp
	check func(string) bool
}{
	{"appName", regexp.MustCompile(`^[A-Za-z0-9._-]+$`), validAppName},
	{"bundleID", regexp.MustCompile(`^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$`), validBundleID},
	{"appleID", regexp.MustCompile(`^[A-Za-z0-9]{10}$`), validAppleID},
	{"envVar", regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`), validEnvVar},
	{"group", regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]*\$?$`), validGroup},
}

// nameEdgeCases are inputs at the edges of the five languages. Each is run
// through every check (and, in TestNameChecksMutations, mutated).
var nameEdgeCases = []string{
	"", " ", "\n", "\x00", "a", "Z", "0", "9", "_", "-", ".", "$", "é", "\xff", "\uFFFD",
	"a\n", "\na", "a ", " a", "a\x00", "a$\n", "A\r",
	// app names
	"my-app_1.2", "..", "a..b", ".a", "a.", "app/x", "app name", "ÄPP",
	// bundle ids
	"com.example.app", "com.example.app.voip", "com..example", ".com.example", "com.example.",
	"com.example-1.app", "com_example", "-", "-.-", "a.b.c.d.e.f", "com.exämple",
	// apple ids (10 characters): lengths 9, 10, 11
	"ABCDE12345", "abcde12345", "ABCDE1234", "ABCDE123456", "ABCDE_1234", "ABCDE-1234",
	"ABCDE1234é", "ABCDE12345\n", "ABCD\x0012345",
	// environment variable names
	"APNSD_P12_PASSWORD", "_x", "__", "1ABC", "A1", "A-B", "A.B", "a_b_",
	// groups
	"apnsd", "_apnsd", "apnsd$", "apnsd$$", "$apnsd", "a$b", "a.b-c_d$", "-apnsd", ".apnsd",
	"_$", "0$", "$$", "a$ ", "apnsd\n",
}

func TestNameChecksEdgeCases(t *testing.T) {
	for _, c := range nameChecks {
		for _, s := range nameEdgeCases {
			if got, want := c.check(s), c.re.MatchString(s); got != want {
				t.Errorf("%s(%q) = %v, regexp %s says %v", c.name, s, got, c.re, want)
			}
		}
	}
	// A few the tests must see accepted, so the comparison is not only
	// over refusals.
	for _, tc := range []struct {
		check func(string) bool
		s     string
	}{
		{validAppName, "my-app_1.2"}, {validBundleID, "com.example.app"}, {validAppleID, "ABCDE12345"},
		{validAppleID, "abcde12345"}, {validEnvVar, "_x"}, {validGroup, "apnsd$"}, {validGroup, "0"},
	} {
		if !tc.check(tc.s) {
			t.Errorf("%q refused", tc.s)
		}
	}
}

// nameAlphabet is one symbol of each kind the five languages tell apart,
// plus a multi-byte rune and a byte that is not UTF-8.
var nameAlphabet = []string{"a", "z", "A", "Z", "0", "9", ".", "_", "-", "$", "\n", "é", "\xff"}

// TestNameChecksExhaustive also walks these chunks, up to 3 of them, so that
// it reaches 10-character ids and their neighbours.
var nameChunks = []string{"ABCDE", "a1b2c", "A-B", "A.B", "_9$", ".", "é", "\n"}

// TestNameChecksExhaustive compares every check with its regexp on every
// string of up to 4 symbols of nameAlphabet (30,941 strings) and every
// string of up to 3 nameChunks.
func TestNameChecksExhaustive(t *testing.T) {
	n := 0
	accepted := make([]int, len(nameChecks))
	var walk func(prefix string, depth int)
	walk = func(prefix string, depth int) {
		n++
		for i, c := range nameChecks {
			got, want := c.check(prefix), c.re.MatchString(prefix)
			if got != want {
				t.Fatalf("%s(%q) = %v, regexp %s says %v", c.name, prefix, got, c.re, want)
			}
			if got {
				accepted[i]++
			}
		}
		if depth == 0 {
			return
		}
		for _, sym := range nameAlphabet {
			walk(prefix+sym, depth-1)
		}
	}
	walk("", 4)
	if want := 1 + 13 + 13*13 + 13*13*13 + 13*13*13*13; n != want {
		t.Fatalf("walked %d strings, want %d", n, want)
	}
	for _, a := range nameChunks {
		for _, b := range nameChunks {
			for _, c := range nameChunks {
				for _, s := range []string{a, a + b, a + b + c} {
					for i, chk := range nameChecks {
						got, want := chk.check(s), chk.re.MatchString(s)
						if got != want {
							t.Fatalf("%s(%q) = %v, regexp %s says %v", chk.name, s, got, chk.re, want)
						}
						if got {
							accepted[i]++
						}
					}
				}
			}
		}
	}
	for i, c := range nameChecks {
		if accepted[i] == 0 {
			t.Errorf("the walk accepted no %s; want some", c.name)
		}
		t.Logf("%s: %d accepted", c.name, accepted[i])
	}
}

// TestNameChecksMutations compares the checks with the regexps on every
// edge case with one symbol of nameAlphabet replaced, inserted or deleted at
// each position (which reaches the 10-character ids' neighbours that the
// exhaustive walk is too short for).
func TestNameChecksMutations(t *testing.T) {
	for _, s := range nameEdgeCases {
		for _, m := range mutations(s, nameAlphabet) {
			for _, c := range nameChecks {
				if got, want := c.check(m), c.re.MatchString(m); got != want {
					t.Fatalf("%s(%q) = %v, regexp %s says %v", c.name, m, got, c.re, want)
				}
			}
		}
	}
}

// mutations returns s with each byte deleted, and with each symbol of
// alphabet inserted before each byte or put in place of it.
func mutations(s string, alphabet []string) []string {
	var out []string
	for i := 0; i <= len(s); i++ {
		if i < len(s) {
			out = append(out, s[:i]+s[i+1:])
		}
		for _, sym := range alphabet {
			out = append(out, s[:i]+sym+s[i:])
			if i < len(s) {
				out = append(out, s[:i]+sym+s[i+1:])
			}
		}
	}
	return out
}

// FuzzNameChecks compares every check with its regexp on arbitrary input
// (scripts/test.sh runs it briefly).
func FuzzNameChecks(f *testing.F) {
	for _, s := range nameEdgeCases {
		f.Add(s)
	}
	f.Add(strings.Repeat("a.", 40) + "b$")
	f.Fuzz(func(t *testing.T, s string) {
		for _, c := range nameChecks {
			if got, want := c.check(s), c.re.MatchString(s); got != want {
				t.Fatalf("%s(%q) = %v, regexp %s says %v", c.name, s, got, c.re, want)
			}
		}
	})
}
