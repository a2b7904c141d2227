// Command rssfloor is the idle-RSS floor of apnsbench compare: the smallest
// Go program that does what an idle apnsd does, so that apnsd's idle RSS
// can be read against it. It listens on a Unix socket, dials one HTTP/2
// connection over TLS with a client certificate (ALPN h2, preface and
// SETTINGS exchanged, x/net's Framer), gives start-up garbage back as
// apnsd does, prints "up" and idles until killed.
//
// Usage: rssfloor ADDR CERT KEY CA SOCKET
package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"runtime/debug"
	"time"

	"golang.org/x/net/http2"
)

func main() {
	if len(os.Args) != 6 {
		fmt.Fprintln(os.Stderr, "usage: rssfloor ADDR CERT KEY CA SOCKET")
		os.Exit(2)
	}
	addr, certFile, keyFile, caFile, sock := os.Args[1], os.Args[2], os.Args[3], os.Args[4], os.Args[5]
	if err := run(addr, certFile, keyFile, caFile, sock); err != nil {
		fmt.Fprintln(os.Stderr, "rssfloor:", err)
		os.Exit(1)
	}
	select {}
}

func run(addr, certFile, keyFile, caFile, sock string) error {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return err
	}
	// As apnsd with ca_file: the system roots plus the file.
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	pool.AppendCertsFromPEM(ca)
	l, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	host, _, _ := net.SplitHostPort(addr)
	c, err := tls.Dial("tcp", addr, &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, NextProtos: []string{"h2"}, ServerName: host})
	if err != nil {
		return err
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		return fmt.Errorf("ALPN gave %q, not h2", p)
	}
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		return err
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		return err
	}
	settled := make(chan error, 1)
	go func() {
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				settled <- err
				return
			}
			if s, ok := f.(*http2.SettingsFrame); ok && !s.IsAck() {
				settled <- fr.WriteSettingsAck()
			}
		}
	}()
	select {
	case err := <-settled:
		if err != nil {
			return err
		}
	case <-time.After(10 * time.Second):
		return fmt.Errorf("no SETTINGS from %s within 10s", addr)
	}
	debug.FreeOSMemory() // as apnsd does once its connections are up
	fmt.Println("up")
	return nil
}
