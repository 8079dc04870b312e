// Command diamclient is the Diameter lab's go-diameter credit-control
// client: over one connection it runs N sessions (CCR-Initial, -Update,
// -Termination each), W at a time, and prints one JSON result: answers,
// failures, sessions answered by one server (sticky) or by two (moved),
// vendor AVPs that did not come back byte for byte, answers nobody waited
// for, and the elapsed time. With --pause-at K it writes a "paused" line
// after K sessions and waits until --pause-file exists.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/telcolb/telcolb/l7parse/diameter"
	lab "github.com/telcolb/telcolb/scenarios/diameter"
)

type result struct {
	Event          string           `json:"event"`
	Sessions       int              `json:"sessions"`
	Answers        int64            `json:"answers"`
	Failures       int64            `json:"failures"`
	FirstFailure   string           `json:"firstFailure,omitempty"`
	Sticky         int              `json:"sticky"`
	Moved          int              `json:"moved"`
	Split          int              `json:"split"`
	OpaqueMismatch int64            `json:"opaqueMismatch"`
	Duplicates     int64            `json:"duplicates"`
	PerServer      map[string]int   `json:"perServer"`
	MovedFrom      map[string]int   `json:"movedFrom"`
	Seconds        float64          `json:"seconds"`
	Results        map[uint32]int64 `json:"results"`
}

func main() {
	peer := flag.String("peer", "", "agent address")
	host := flag.String("host", "pcef.client.example", "Origin-Host")
	realm := flag.String("realm", "client.example", "Origin-Realm")
	dest := flag.String("dest-realm", "example", "Destination-Realm")
	destHost := flag.String("dest-host", "", "Destination-Host (none by default)")
	n := flag.Int("sessions", 10000, "sessions")
	window := flag.Int("window", 64, "sessions in flight")
	pauseAt := flag.Int("pause-at", -1, "after this many sessions, print paused and wait for --pause-file")
	pauseFile := flag.String("pause-file", "", "file whose existence ends the pause")
	flag.Parse()
	c, err := lab.Dial(*peer, *host, *realm)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	c.DestHost = *destHost
	enc := json.NewEncoder(os.Stdout)
	_ = enc.Encode(map[string]any{"event": "connected"})
	res := result{Event: "done", Sessions: *n, PerServer: map[string]int{}, MovedFrom: map[string]int{}, Results: map[uint32]int64{}}
	var mu sync.Mutex
	origins := make([][]string, *n)
	var failures, answers, opaque atomic.Int64
	var started atomic.Int64
	var pauseOnce sync.Once
	paused := make(chan struct{})
	if *pauseAt < 0 {
		close(paused)
	}
	start := time.Now()
	var wg sync.WaitGroup
	next := make(chan int)
	go func() {
		for i := range *n {
			if i == *pauseAt {
				// wait for the in-flight sessions, then pause
				for started.Load() != int64(i) {
					time.Sleep(time.Millisecond)
				}
				pauseOnce.Do(func() {
					_ = enc.Encode(map[string]any{"event": "paused", "sessions": i})
					for {
						if _, err := os.Stat(*pauseFile); err == nil {
							break
						}
						time.Sleep(20 * time.Millisecond)
					}
					close(paused)
				})
			}
			next <- i
		}
		close(next)
	}()
	for range *window {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				sid := fmt.Sprintf("%s;%d;%d", *host, start.Unix(), i)
				for k, typ := range []uint32{diameter.CCInitial, diameter.CCUpdate, diameter.CCTermination} {
					ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
					a, err := c.CCR(ctx, sid, *dest, typ, uint32(k))
					cancel()
					mu.Lock()
					if err != nil || a.Result != diameter.Success {
						failures.Add(1)
						if res.FirstFailure == "" {
							res.FirstFailure = fmt.Sprintf("%s type %d: %v result %d from %s", sid, typ, err, a.Result, a.Origin)
						}
					}
					if err == nil {
						answers.Add(1)
						res.Results[a.Result]++
						if len(origins[i]) == 0 || origins[i][len(origins[i])-1] != a.Origin {
							origins[i] = append(origins[i], a.Origin)
						}
						if !bytes.Equal(a.Opaque, lab.OpaqueAVP(sid)) {
							opaque.Add(1)
						}
					}
					mu.Unlock()
				}
				started.Add(1)
			}
		}()
	}
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	res.Answers, res.Failures, res.OpaqueMismatch, res.Duplicates = answers.Load(), failures.Load(), opaque.Load(), c.Duplicates()
	for _, o := range origins {
		switch len(o) {
		case 1:
			res.Sticky++
			res.PerServer[o[0]]++
		case 2:
			res.Moved++
			res.MovedFrom[o[0]]++
		default:
			res.Split++
		}
	}
	_ = enc.Encode(res)
}
