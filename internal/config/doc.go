// Package config owns apnsd's configuration file: it decodes the TOML
// strictly (an unknown key is an error), applies defaults, resolves relative
// file paths against the file's directory, and checks the result, first
// structurally (Validate) and then against the credential files on disk
// (CheckFiles), so that a bad configuration is rejected at startup with a
// message naming the file, the field and the problem. apnsd.toml.example at
// the repository root documents every key.
package config
