// Command apnsd is a local daemon that sends Apple push notifications for
// the programs on its host; see README.md. Its command line is package cli.
package main

import (
	"os"

	"github.com/apnsd/apnsd/cmd/apnsd/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
