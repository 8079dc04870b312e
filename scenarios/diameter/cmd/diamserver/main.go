// Command diamserver is a go-diameter credit-control server for the
// Diameter lab: it answers every CCR with success, echoing the unknown
// vendor AVP, and prints a JSON stats line every 200ms (requests, those
// with the T flag, sessions, and vendor AVPs that did not arrive byte for
// byte).
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	lab "github.com/telcolb/telcolb/scenarios/diameter"
)

func main() {
	listen := flag.String("listen", "0.0.0.0:3868", "address to listen on")
	host := flag.String("host", "ocs.example", "Origin-Host")
	realm := flag.String("realm", "example", "Origin-Realm")
	flag.Parse()
	s, err := lab.StartServer(*listen, *host, *realm)
	if err != nil {
		log.Fatal(err)
	}
	enc := json.NewEncoder(os.Stdout)
	_ = enc.Encode(map[string]any{"event": "listening", "addr": s.Addr})
	for range time.Tick(200 * time.Millisecond) {
		req, re := s.Counts()
		sess := s.Sessions()
		bad := 0
		for sid := range sess {
			if !bytes.Equal(s.Opaque(sid), lab.OpaqueAVP(sid)) {
				bad++
			}
		}
		if err := enc.Encode(map[string]any{"event": "stats", "requests": req, "retransmitted": re, "sessions": len(sess), "opaqueMismatch": bad}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return
		}
	}
}
