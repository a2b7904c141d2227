// Package demo sets up apnsd's demo: two local APNs stand-ins (sandbox and
// production) with throwaway credentials and a config file pointing at
// them, so apnsd can be tried, and tested end to end, without an Apple
// account.
package demo
