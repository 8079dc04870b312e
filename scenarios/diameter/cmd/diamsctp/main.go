// Command diamsctp is the Diameter lab's peer over SCTP (RFC 6733 §2.1.1:
// one Diameter message per SCTP user message, PPID 46), on the N2 proxy's
// transports (kernel SCTP, or usrsctp where the kernel has none), so it
// runs in its own network namespace with its own stack. go-diameter's
// SCTP needs kernel SCTP, so this peer speaks Diameter with
// l7parse/diameter.
//
//	diamsctp --role server --listen 10.80.11.2:3868 --host ocs1.lab.example --realm lab.example
//	diamsctp --role client --peer 10.80.100.1:3868 --sessions 200 --dest-realm lab.example
//
// The server answers CER, DWR, DPR and every other request (success,
// Session-Id echoed), prints {"event":"listening"} and, on SIGTERM,
// {"event":"stats",...}. The client exchanges capabilities, runs each
// session's CCR-Initial, -Update and -Termination in turn, and prints
// {"event":"done",...}: answers, failures, the CEA's result, sessions
// answered by one server (sticky) and the sessions per server.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/telcolb/telcolb/l7parse/diameter"
	"github.com/telcolb/telcolb/sctplb/transport"
	"github.com/telcolb/telcolb/sctplb/transport/auto"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("diamsctp", flag.ContinueOnError)
	fs.SetOutput(stderr)
	role := fs.String("role", "", "server or client")
	listen := fs.String("listen", "", "server: addr:port")
	peer := fs.String("peer", "", "client: the agent's addr:port")
	host := fs.String("host", "pcef.sctp.example", "Origin-Host")
	realm := fs.String("realm", "client.example", "Origin-Realm")
	dest := fs.String("dest-realm", "lab.example", "client: Destination-Realm")
	sessions := fs.Int("sessions", 100, "client: sessions")
	timeout := fs.Duration("timeout", 10*time.Second, "client: wait for one answer at most this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	tr, chosen, closer, err := auto.Open(auto.Config{Logger: log})
	if err != nil {
		fmt.Fprintln(stderr, "diamsctp:", err)
		return 1
	}
	defer closer.Close()
	enc := json.NewEncoder(stdout)
	id := diameter.Identity{Host: *host, Realm: *realm}
	switch *role {
	case "server":
		ep, err := transport.ParseEndpoint(*listen)
		if err != nil {
			fmt.Fprintln(stderr, "diamsctp: --listen:", err)
			return 2
		}
		return serve(tr, ep, id, string(chosen), enc, stderr)
	case "client":
		ep, err := transport.ParseEndpoint(*peer)
		if err != nil {
			fmt.Fprintln(stderr, "diamsctp: --peer:", err)
			return 2
		}
		res := client(tr, ep, id, *dest, *sessions, *timeout)
		res.Event, res.Transport = "done", string(chosen)
		_ = enc.Encode(res)
		// Let the association's SHUTDOWN complete before the stack goes.
		time.Sleep(300 * time.Millisecond)
		return 0
	}
	fmt.Fprintln(stderr, "diamsctp: --role server or client")
	return 2
}

type stats struct {
	Event     string `json:"event"`
	Requests  int    `json:"requests"`
	CER       int    `json:"cer"`
	DWR       int    `json:"dwr"`
	DPR       int    `json:"dpr"`
	BadPPID   int    `json:"badPPID"`
	Malformed int    `json:"malformed"`
	Sessions  int    `json:"sessions"`
}

func serve(tr transport.Transport, ep transport.Endpoint, id diameter.Identity, chosen string, enc *json.Encoder, stderr io.Writer) int {
	ln, err := tr.Listen(ep)
	if err != nil {
		fmt.Fprintln(stderr, "diamsctp:", err)
		return 1
	}
	var mu sync.Mutex
	st := stats{Event: "stats"}
	seen := map[string]bool{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for {
			c, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for {
					m, err := c.Recv(ctx)
					if err != nil {
						return
					}
					msg, err := diameter.Parse(m.Data)
					mu.Lock()
					if m.PPID != diameter.PPID {
						st.BadPPID++
					}
					if err != nil {
						st.Malformed++
						mu.Unlock()
						continue
					}
					if !msg.IsRequest() {
						mu.Unlock()
						continue
					}
					var ans []byte
					switch msg.Code {
					case diameter.CmdCapabilitiesExchange:
						st.CER++
						ans = diameter.CEA(msg.Header, diameter.Capabilities{Identity: id, AuthApps: []uint32{diameter.AppCC}, ProductName: "diamsctp"}, diameter.Success)
					case diameter.CmdDeviceWatchdog:
						st.DWR++
						ans = diameter.Answer(msg.Header, nil, id, diameter.Success)
					case diameter.CmdDisconnectPeer:
						st.DPR++
						ans = diameter.Answer(msg.Header, nil, id, diameter.Success)
					default:
						st.Requests++
						if !seen[string(msg.SessionID)] {
							seen[string(msg.SessionID)] = true
							st.Sessions++
						}
						ans = diameter.Answer(msg.Header, msg.SessionID, id, diameter.Success)
					}
					mu.Unlock()
					if err := c.Send(ctx, transport.Message{Stream: m.Stream, PPID: diameter.PPID, Data: ans}); err != nil {
						return
					}
				}
			}()
		}
	}()
	_ = enc.Encode(map[string]any{"event": "listening", "transport": chosen})
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	<-sigs
	mu.Lock()
	_ = enc.Encode(st)
	mu.Unlock()
	_ = ln.Close()
	return 0
}

type result struct {
	Event     string `json:"event"`
	Transport string `json:"transport"`
	CEA       uint32 `json:"cea"`
	// CEAOrigin is the CEA's Origin-Host: the agent's own identity when
	// an agent terminates the connection, a server's when only an L4
	// balancer stands between.
	CEAOrigin    string         `json:"ceaOrigin"`
	Sessions     int            `json:"sessions"`
	Answers      int            `json:"answers"`
	Failures     int            `json:"failures"`
	FirstFailure string         `json:"firstFailure,omitempty"`
	Sticky       int            `json:"sticky"`
	BadPPID      int            `json:"badPPID"`
	PerServer    map[string]int `json:"perServer"`
}

func client(tr transport.Transport, ep transport.Endpoint, id diameter.Identity, dest string, n int, timeout time.Duration) result {
	res := result{Sessions: n, PerServer: map[string]int{}}
	fail := func(format string, a ...any) {
		res.Failures++
		if res.FirstFailure == "" {
			res.FirstFailure = fmt.Sprintf(format, a...)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(n+10)*timeout)
	defer cancel()
	c, err := tr.Dial(ctx, nil, ep)
	if err != nil {
		fail("dial: %v", err)
		return res
	}
	defer c.Close()
	// exchange sends one request and reads until its answer, answering
	// the agent's watchdogs meanwhile.
	exchange := func(req []byte, hbh uint32) (diameter.Msg, error) {
		if err := c.Send(ctx, transport.Message{PPID: diameter.PPID, Data: req}); err != nil {
			return diameter.Msg{}, err
		}
		for {
			rctx, rcancel := context.WithTimeout(ctx, timeout)
			m, err := c.Recv(rctx)
			rcancel()
			if err != nil {
				return diameter.Msg{}, err
			}
			if m.PPID != diameter.PPID {
				res.BadPPID++
			}
			msg, err := diameter.Parse(m.Data)
			if err != nil {
				return diameter.Msg{}, err
			}
			if msg.IsRequest() {
				if msg.Code == diameter.CmdDeviceWatchdog {
					_ = c.Send(ctx, transport.Message{PPID: diameter.PPID, Data: diameter.Answer(msg.Header, nil, id, diameter.Success)})
				}
				continue
			}
			if msg.HopByHop != hbh {
				return diameter.Msg{}, fmt.Errorf("answer to hop-by-hop %#x, want %#x", msg.HopByHop, hbh)
			}
			return msg, nil
		}
	}
	cea, err := exchange(diameter.CER(diameter.Capabilities{Identity: id, AuthApps: []uint32{diameter.AppCC}, ProductName: "diamsctp"}, 1, 1), 1)
	if err != nil {
		fail("CER: %v", err)
		return res
	}
	res.CEA, res.CEAOrigin = cea.ResultCode, string(cea.OriginHost)
	if cea.ResultCode != diameter.Success {
		fail("CEA %d", cea.ResultCode)
		return res
	}
	hbh := uint32(100)
	for i := range n {
		sid := fmt.Sprintf("%s;sctp;%d", id.Host, i)
		origins := map[string]bool{}
		for k, typ := range []uint32{diameter.CCInitial, diameter.CCUpdate, diameter.CCTermination} {
			hbh++
			req := diameter.Message(diameter.FlagRequest|diameter.FlagProxiable, diameter.CmdCreditControl, diameter.AppCC, hbh, hbh,
				diameter.Str(diameter.AVPSessionID, sid), diameter.Str(diameter.AVPOriginHost, id.Host),
				diameter.Str(diameter.AVPOriginRealm, id.Realm), diameter.Str(diameter.AVPDestinationRealm, dest),
				diameter.U32(diameter.AVPAuthAppID, diameter.AppCC), diameter.U32(diameter.AVPCCRequestType, typ),
				diameter.U32(diameter.AVPCCRequestNumber, uint32(k)))
			a, err := exchange(req, hbh)
			if err != nil {
				fail("%s: %v", sid, err)
				if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.EOF) {
					return res
				}
				continue
			}
			res.Answers++
			if a.ResultCode != diameter.Success || string(a.SessionID) != sid {
				fail("%s: result %d, Session-Id %q", sid, a.ResultCode, a.SessionID)
				continue
			}
			origins[string(a.OriginHost)] = true
		}
		if len(origins) == 1 {
			res.Sticky++
			for o := range origins {
				res.PerServer[o]++
			}
		}
	}
	// A DPR before leaving, as a peer shutting down sends (RFC 6733 §5.4).
	hbh++
	if a, err := exchange(diameter.DPR(id, diameter.DisconnectRebooting, hbh, hbh), hbh); err != nil || a.ResultCode != diameter.Success {
		fail("DPR: %v (result %d)", err, a.ResultCode)
	}
	return res
}
