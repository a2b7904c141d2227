package bench

import (
	"context"
	"crypto/tls"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sideshow/apns2"

	"github.com/apnsd/apnsd/internal/apns"
)

// runApns2 sends n notifications (the same request as the other paths:
// token, topic, push type, payload, a fresh apns-id each when withID) to
// the sink with sideshow/apns2, the library a Go user might pick instead of
// apnsd, from workers goroutines sharing one apns2.Client (one HTTP/2
// connection, as Go's HTTP/2 transport pools it). Only cmd/apnsbench links
// this package, so apns2 stays out of the daemon's binary.
func (e *Env) runApns2(ctx context.Context, n, workers int, withID bool) (Result, error) {
	cert := e.m.pushTLS
	c := apns2.NewClient(cert)
	c.Host = e.sink.url
	// apns2 builds an x/net http2.Transport (deprecated); net/http's own
	// HTTP/2 transport (the same code, bundled) replaces it, with apns2's
	// ping health check and client timeout.
	var protos http.Protocols
	protos.SetHTTP2(true)
	c.HTTPClient = &http.Client{
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: e.m.roots},
			Protocols:       &protos,
			HTTP2:           &http.HTTP2Config{SendPingTimeout: apns2.ReadIdleTimeout},
		},
		Timeout: apns2.HTTPClientTimeout,
	}
	defer c.CloseIdleConnections()
	var next atomic.Int64
	ts := make([]*tally, workers)
	lat := new(hist)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		ts[w] = newTally(lat)
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := ts[w]
			for next.Add(1) <= int64(n) && ctx.Err() == nil {
				nt := &apns2.Notification{DeviceToken: Token, Topic: Topic, PushType: apns2.PushTypeAlert, Payload: Payload}
				if withID {
					nt.ApnsID = apns.NewUUID()
				}
				t0 := time.Now()
				rctx, cancel := context.WithTimeout(ctx, RequestTimeout)
				res, err := c.PushWithContext(rctx, nt)
				cancel()
				d := time.Since(t0)
				if err != nil {
					t.add("error:apns2", true, d)
					continue
				}
				t.add(strconv.Itoa(res.StatusCode), false, d)
			}
		}()
	}
	wg.Wait()
	r := finish("apns2", 0, time.Since(start), ts, lat)
	r.Sent = r.Answered
	return r, ctx.Err()
}
