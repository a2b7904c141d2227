// Package prom is apnsd's Prometheus exposition: counter and histogram
// vectors, metrics read at scrape time, the Go runtime and process metrics,
// and an HTTP handler writing the text format (version 0.0.4). It replaces
// github.com/prometheus/client_golang, whose packages (with protobuf,
// procfs and yaml) made up a third of apnsd's binary and ~4 MiB of its idle
// RSS whether or not [metrics] was on (docs/performance.md, "Idle RSS").
package prom
