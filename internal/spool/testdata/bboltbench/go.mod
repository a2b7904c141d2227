module github.com/apnsd/apnsd/internal/spool/testdata/bboltbench

go 1.26.8

require (
	github.com/apnsd/apnsd v0.0.0
	go.etcd.io/bbolt v1.5.0
)

require golang.org/x/sys v0.49.0 // indirect

replace github.com/apnsd/apnsd => ../../../..
