// Command peerclient is the tests' client run as another user (setpriv):
//
//	peerclient do SOCK LINE...      one connection: each line, then its answer, printed
//	peerclient hold SOCK N          open up to N connections, each answered a ping;
//	                                print "held K" and hold them until stdin closes
//	peerclient flood SOCK N LINE    N connections that write LINE repeatedly and never read;
//	                                print "flooding" and hold until stdin closes
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: peerclient do|hold|flood SOCK ...")
		os.Exit(2)
	}
	sock := os.Args[2]
	switch os.Args[1] {
	case "do":
		c, err := net.Dial("unix", sock)
		if err != nil {
			fmt.Println("dial error:", err)
			return
		}
		br := bufio.NewReader(c)
		for _, l := range os.Args[3:] {
			if _, err := io.WriteString(c, l+"\n"); err != nil {
				// A refusal may be waiting to be read.
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				if line, rerr := br.ReadString('\n'); rerr == nil {
					fmt.Print(line)
					return
				}
				fmt.Println("write error:", err)
				return
			}
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			line, err := br.ReadString('\n')
			if err != nil {
				fmt.Printf("read error: %v %s\n", err, line)
				return
			}
			fmt.Print(line)
		}
	case "hold":
		n, _ := strconv.Atoi(os.Args[3])
		var held []net.Conn
		for range n {
			c, err := net.Dial("unix", sock)
			if err != nil {
				break
			}
			io.WriteString(c, `{"op":"ping"}`+"\n")
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || !contains(line, `"pong":true`) {
				c.Close()
				continue // refused: try the next (the limit may free up)
			}
			c.SetReadDeadline(time.Time{})
			held = append(held, c)
		}
		fmt.Printf("held %d\n", len(held))
		io.Copy(io.Discard, os.Stdin)
	case "flood":
		n, _ := strconv.Atoi(os.Args[3])
		line := []byte(os.Args[4] + "\n")
		for range n {
			c, err := net.Dial("unix", sock)
			if err != nil {
				fmt.Println("dial error:", err)
				break
			}
			go func() {
				for {
					if _, err := c.Write(line); err != nil {
						return
					}
				}
			}()
		}
		fmt.Println("flooding")
		io.Copy(io.Discard, os.Stdin)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
