// Package lograte aggregates repeated log lines: the first of a kind is
// logged at once, the repeats within an interval are counted and logged as
// one line with the count, so a peer or a fault that repeats at will costs
// the log a line per interval.
package lograte
