// Command apnsctl talks to a running apnsd: send, ping, status, reload,
// check; see README.md.
package main

import (
	"os"

	"github.com/apnsd/apnsd/internal/ctl"
)

func main() {
	os.Exit(ctl.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
