package config

import (
	"errors"
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
