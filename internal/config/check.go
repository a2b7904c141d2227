package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/apnsd/apnsd/internal/apns"
)

// CheckFiles loads every credential the configuration names, as the daemon
// would at time now, and returns all problems joined, each naming the app,
// the environment, the field and the file. Beyond apns.LoadCertificate's
// checks it reports a certificate that does not cover the app's topic or is
// marked for the other environment than the Apple host it is used with, an
// unreadable or empty ca_file, and a token key_file that is not a PKCS#8
// P-256 PEM key. Call it after Validate (Load and Parse do).
func (c *Config) CheckFiles(now time.Time) error {
	p := &problems{file: c.Path}
	for i := range c.Apps {
		a := &c.Apps[i]
		usesToken := false
		for _, e := range []*EnvConfig{a.Sandbox, a.Production} {
			if e == nil {
				continue
			}
			if e.CAFile != "" {
				if err := checkCAFile(e.CAFile); err != nil {
					p.add(i, a.Name, e.Name+".ca_file", err, "%v", err)
				}
			}
			if e.AuthKind() == "token" {
				if t := e.Token; t != nil {
					if _, err := apns.LoadTokenKey(t.KeyFile, t.KeyID, t.TeamID, now); err != nil {
						p.add(i, a.Name, e.Name+".token.key_file", err, "%v", err)
					}
				} else {
					usesToken = true
				}
				continue
			}
			cert, err := apns.LoadCertificate(e.Cert, now)
			if err != nil {
				p.add(i, a.Name, e.Name+"."+certField(e.Cert, err), err, "%v", err)
				continue
			}
			field := e.Name + "." + certField(e.Cert, nil)
			for _, problem := range apns.CertificateMisfits(cert, a.Topic, e.Endpoint) {
				p.add(i, a.Name, field, nil, "%s", problem)
			}
		}
		if a.Token != nil && usesToken {
			if _, err := apns.LoadTokenKey(a.Token.KeyFile, a.Token.KeyID, a.Token.TeamID, now); err != nil {
				p.add(i, a.Name, "token.key_file", err, "%v", err)
			}
		}
	}
	return p.err()
}

// certField names the key of CertFiles a load error is about.
func certField(f apns.CertFiles, err error) string {
	var ce *apns.CredentialError
	if errors.As(err, &ce) {
		switch {
		case errors.Is(err, apns.ErrP12Password) && f.P12PasswordEnv != "" && ce.Path == f.P12File:
			return "p12_password_env"
		case ce.Path == "":
		case ce.Path == f.KeyFile:
			return "key_file"
		case ce.Path == f.P12PasswordFile:
			return "p12_password_file"
		case ce.Path == f.P12File:
			return "p12_file"
		}
	}
	if f.CertFile == "" && f.P12File != "" {
		return "p12_file"
	}
	return "cert_file"
}

func checkCAFile(path string) error {
	_, err := apns.LoadRootCAs(path)
	return err
}

// StateDir is the one directory the shipped systemd unit lets apnsd write
// (StateDirectory=apnsd under ProtectSystem=strict).
const StateDir = "/var/lib/apnsd"

// Warnings returns what is not an error but likely a mistake, each a full
// sentence: a file holding a private key (or a .p12 or its password) that
// others than its owner may read (the documented setup is owner-only:
// 0600, owned by apnsd or root), and an unregistered_file outside StateDir,
// which apnsd cannot create under the shipped unit. Missing files are left
// to CheckFiles.
func (c *Config) Warnings() []string {
	var w []string
	seen := map[string]bool{}
	for i := range c.Apps {
		a := &c.Apps[i]
		keys := map[string]string{}
		if a.Token != nil {
			keys["token.key_file"] = a.Token.KeyFile
		}
		for _, e := range []*EnvConfig{a.Sandbox, a.Production} {
			if e == nil {
				continue
			}
			keys[e.Name+".key_file"] = e.Cert.KeyFile
			keys[e.Name+".p12_file"] = e.Cert.P12File
			keys[e.Name+".p12_password_file"] = e.Cert.P12PasswordFile
			if e.Cert.KeyFile == "" && e.Cert.P12File == "" {
				keys[e.Name+".cert_file"] = e.Cert.CertFile // a combined PEM holds the key
			}
		}
		for _, field := range sortedKeys(keys) {
			path := keys[field]
			if path == "" || seen[path] {
				continue
			}
			seen[path] = true
			fi, err := os.Stat(path)
			if err != nil || fi.Mode().Perm()&0o077 == 0 {
				continue
			}
			w = append(w, fmt.Sprintf("apps[%d] (name %q): %s: %s is mode %04o: it holds a private key and should be readable by its owner only (chmod 600 %s)",
				i, a.Name, field, path, fi.Mode().Perm(), path))
		}
	}
	if f := c.UnregisteredFile; f != "" && !strings.HasPrefix(filepath.Clean(f), StateDir+"/") {
		w = append(w, fmt.Sprintf("unregistered_file: %s is outside %s: under the shipped systemd unit (ProtectSystem=strict) only %s is writable, so apnsd cannot open it there (use %s/unregistered.jsonl, or add ReadWritePaths= in a drop-in)",
			f, StateDir, StateDir, StateDir))
	}
	return w
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
