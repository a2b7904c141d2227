// Package apns speaks Apple's HTTP/2 provider API: it builds and validates
// notification requests, loads provider credentials, and keeps a small set of
// long-lived HTTP/2 connections per endpoint over which notifications are
// sent and Apple's verdicts are read back.
package apns
