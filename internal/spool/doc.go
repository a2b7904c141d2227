// Package spool is apnsd's durable, bounded queue of accepted notifications:
// an append-only log of CRC-checked segment files in the state directory,
// written by one commit goroutine with group commit, replayed at start, and
// reclaimed as records are marked done.
//
// # How the daemon uses it
//
// At start, after loading the config and before accepting connections:
//
//	sp, rec, err := spool.Open(spool.Options{Dir: cfg.StateDir, MaxBytes: ..., Logger: log})
//	if err != nil { return err }          // only bad options, I/O errors, or ErrLocked
//	for _, r := range rec.Records {        // in the order they were accepted
//		n := decode(r.Data)                // app, env, headers, payload, deadline
//		resubmit(n, func() { sp.Done(r.ID) }) // as wait:false, no client to answer
//	}
//
// rec.Corruptions (also logged) reports damaged data that was skipped.
//
// On Submit with "wait":false: encode the notification and call
//
//	id, err := sp.Append(data, func(id uint64, err error) {
//		// on the spool's commit goroutine: must not block
//		if err != nil { answer(internal error) } else { answer(queued:true) }
//	})
//
// errors.Is(err, spool.ErrFull) maps to queue_full; ErrTooLarge, ErrClosed
// (shutting_down) and ErrFailed are answered at once, and the notification is
// not sent. The send to APNs may start at once, in parallel with the write:
// only the queued:true answer waits for durability.
//
// When the final APNs answer arrives (success, or a terminal refusal such as
// BadDeviceToken, or the notification expired) call sp.Done(id). A
// retryable failure that will be retried is not final.
//
// On shutdown, at the drain deadline, call sp.Close(): notifications still
// undelivered stay in the spool and are replayed by the next Open.
//
// # Guarantees
//
// Once a durability callback has reported nil, the record survives a process
// crash or power loss (fdatasync on the segment, fsync on the directory when
// segments are created) and is returned by Open until Done is called for it.
// Done markers are written at once but fdatasync'ed only with the next batch
// of records or at Close, so a power loss (not a crash) can replay a finished
// record: delivery is at least once. The package is documented in full, with
// measurements, in docs/spool.md.
package spool
