// Package defaults holds what apnsd's programs share about the installation:
// the version and where the config file and the socket are by default.
package defaults
