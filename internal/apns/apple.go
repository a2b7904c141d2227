package apns

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
)

// appleHosts maps Apple's APNs hosts to their environment.
var appleHosts = map[string]string{
	"api.push.apple.com":         Production,
	"api.sandbox.push.apple.com": Sandbox,
}

// AppleHostEnv returns the environment of Apple's APNs host in endpoint (a
// URL), and false when endpoint is not one of Apple's hosts (a stand-in, a
// proxy).
func AppleHostEnv(endpoint string) (env string, ok bool) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", false
	}
	env, ok = appleHosts[strings.ToLower(u.Hostname())]
	return env, ok
}

// topicSuffix is the suffix Apple expects on the bundle id for push types
// that have their own topic.
var topicSuffix = map[string]string{
	PushTypeVoIP:         ".voip",
	PushTypeComplication: ".complication",
	PushTypeFileProvider: ".pushkit.fileprovider",
	PushTypeLocation:     ".location-query",
	PushTypeLiveActivity: ".push-type.liveactivity",
	PushTypePushToTalk:   ".voip-ptt",
}

// Topic is the apns-topic for an app whose bundle id is bundleID and a
// push of pushType: the bundle id, plus the suffix Apple expects for push
// types that have their own topic (".voip", ".complication", ...).
func Topic(bundleID, pushType string) string { return bundleID + topicSuffix[pushType] }

// CertificateMisfits lists why a loadable push certificate cannot serve an
// app: it does not cover the app's topic (APNs would answer
// TopicDisallowed), or it is a development certificate for Apple's
// production host or the reverse (BadCertificateEnvironment). Both the
// config check and the daemon (at start and on every reload) use it.
func CertificateMisfits(cert *Certificate, topic, endpoint string) []string {
	var out []string
	file := firstNonEmpty(cert.Source.CertFile, cert.Source.P12File)
	if !cert.Covers(topic) {
		if len(cert.Topics) == 0 {
			out = append(out, fmt.Sprintf("certificate %s names no bundle id (no subject UID, no topics extension): is it an Apple push certificate? (%s)", file, cert.Subject))
		} else {
			out = append(out, fmt.Sprintf("certificate %s is for %s, not the app's topic %q (%s)", file, strings.Join(cert.Topics, ", "), topic, cert.Subject))
		}
	}
	if hostEnv, apple := AppleHostEnv(endpoint); apple && cert.Env != "" && cert.Env != "both" && cert.Env != hostEnv {
		u, _ := url.Parse(endpoint)
		out = append(out, fmt.Sprintf("certificate %s is a %s certificate but the endpoint %s is Apple's %s host; APNs would answer BadCertificateEnvironment", file, cert.Env, u.Host, hostEnv))
	}
	return out
}

// CheckCertificateFit is CertificateMisfits as one error, or nil.
func CheckCertificateFit(cert *Certificate, topic, endpoint string) error {
	if m := CertificateMisfits(cert, topic, endpoint); len(m) > 0 {
		return errors.New(strings.Join(m, "; "))
	}
	return nil
}

// LoadRootCAs returns the system pool plus the PEM certificates in caFile
// (for a stand-in or a proxy with its own CA), or nil, nil for no caFile
// (the system pool is then used as is).
func LoadRootCAs(caFile string) (*x509.CertPool, error) {
	if caFile == "" {
		return nil, nil
	}
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("CA file %s: cannot read: %w", caFile, err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("CA file %s: no PEM CERTIFICATE found", caFile)
	}
	return pool, nil
}
