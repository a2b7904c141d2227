// Command apnsd is a local daemon that sends Apple push notifications for
// the programs on its host; see README.md.
package main

import (
	"os"

	"github.com/apnsd/apnsd/internal/daemon"
)

func main() {
	os.Exit(daemon.Main(os.Args[1:], os.Stdout, os.Stderr))
}
