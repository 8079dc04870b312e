// Command telcolb-syncpeer runs one node of the HA sync (ha/sync: the
// production TCP + mutual TLS transport and machine) for the VM lab's
// impaired-link test, in a network namespace of the guest; its peer runs
// in another, the two joined by a veth with netem on both ends.
//
//	telcolb-syncpeer source --self a --listen 10.88.0.1:7001 --peer b=10.88.0.2:7001 --cert a.pem --key a-key.pem --ca ca.pem --ctl /tmp/sync --ops 2000,1000 --rate 100
//	telcolb-syncpeer sink   --self b --listen 10.88.0.2:7001 --peer a=10.88.0.1:7001 --cert b.pem --key b-key.pem --ca ca.pem --ctl /tmp/sync
//	telcolb-syncpeer probe-recv --listen 10.88.0.2:7002 --count 2000
//	telcolb-syncpeer probe-send --to 10.88.0.2:7002 --count 2000 --interval 1ms
//
// The source puts and deletes records at a steady rate in phases (the test
// changes the link between them: it starts phase k > 1 by creating
// <ctl>/go<k>), ends each phase with a Barrier (every record acknowledged,
// hence applied, by the sink) and announces it in <ctl>/phase<k>.done. Each
// value carries the guest clock at its Put, so the sink, in the same guest,
// measures Put -> Apply on one clock. The sink runs until <ctl>/stop exists.
// A node that fails says why in <ctl>/<role>.failed.
// Both print a JSON Report on stdout as they end.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	stdsync "sync"
	"syscall"
	"time"

	hasync "github.com/telcolb/telcolb/ha/sync"
)

// Report is what a node prints as it ends.
type Report struct {
	Role string `json:"role"`
	// Table is the node's view of the source's table: what the source put
	// (source), what it applied from the source (sink).
	Table map[string]string `json:"table"`
	// Lags are [putNs, applyNs] of every value the sink applied (guest
	// CLOCK_REALTIME, one clock for both namespaces).
	Lags [][2]int64 `json:"lags,omitempty"`
	// Phases are when each of the source's phases started and ended
	// (its barrier done), guest clock.
	Phases []Phase          `json:"phases,omitempty"`
	Stats  hasync.NodeStats `json:"stats"`
	Error  string           `json:"error,omitempty"`
	// Puts and Dels count the source's operations.
	Puts int `json:"puts,omitempty"`
	Dels int `json:"dels,omitempty"`
}

// Phase is one of the source's phases.
type Phase struct {
	Ops     int   `json:"ops"`
	StartNs int64 `json:"startNs"`
	EndNs   int64 `json:"endNs"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: telcolb-syncpeer source|sink|probe-send|probe-recv [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var err error
	switch os.Args[1] {
	case "source", "sink":
		err = node(ctx, os.Args[1], os.Args[2:])
	case "probe-send":
		err = probeSend(os.Args[2:])
	case "probe-recv":
		err = probeRecv(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "telcolb-syncpeer:", err)
		os.Exit(1)
	}
}

type nodeFlags struct {
	self, listen, peer, cert, key, ca, ctl string
	ops                                    string
	rate                                   float64
	keys                                   int
	deleteEvery                            int
	barrierTimeout                         time.Duration
}

func node(ctx context.Context, role string, args []string) error {
	fs := flag.NewFlagSet(role, flag.ExitOnError)
	var f nodeFlags
	fs.StringVar(&f.self, "self", "", "this node's name (its certificate's DNS SAN)")
	fs.StringVar(&f.listen, "listen", "", "host:port to listen on")
	fs.StringVar(&f.peer, "peer", "", "the peer, name=host:port")
	fs.StringVar(&f.cert, "cert", "", "certificate file")
	fs.StringVar(&f.key, "key", "", "key file")
	fs.StringVar(&f.ca, "ca", "", "group CA file")
	fs.StringVar(&f.ctl, "ctl", "/tmp/sync", "control directory (go<k>, phase<k>.done, stop)")
	fs.StringVar(&f.ops, "ops", "1000", "source: operations per phase, comma-separated")
	fs.Float64Var(&f.rate, "rate", 100, "source: operations per second")
	fs.IntVar(&f.keys, "keys", 1500, "source: key space (smaller than the operations: keys are updated)")
	fs.IntVar(&f.deleteEvery, "delete-every", 7, "source: every n-th operation is a deletion")
	fs.DurationVar(&f.barrierTimeout, "barrier-timeout", 2*time.Minute, "source: longest wait for a phase's barrier")
	_ = fs.Parse(args)
	name, addr, ok := strings.Cut(f.peer, "=")
	if !ok || f.self == "" || f.listen == "" {
		return errors.New("--self, --listen and --peer name=host:port are required")
	}
	if err := os.MkdirAll(f.ctl, 0o755); err != nil {
		return err
	}
	rep := Report{Role: role, Table: map[string]string{}}
	var mu stdsync.Mutex // guards rep's table and lags (Apply runs on the node's goroutine)
	cfg := hasync.NodeConfig{
		Self: f.self, Listen: f.listen, Peers: []hasync.Peer{{Name: name, Addr: addr}},
		CertFile: f.cert, KeyFile: f.key, CAFile: f.ca,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	if role == "sink" {
		cfg.Apply = func(as []hasync.Applied) {
			now := time.Now().UnixNano()
			mu.Lock()
			defer mu.Unlock()
			for _, a := range as {
				k := string(a.Record.Key)
				if a.Record.Deleted {
					delete(rep.Table, k)
					continue
				}
				v := string(a.Record.Value)
				rep.Table[k] = v
				if put, err := putTime(v); err == nil {
					rep.Lags = append(rep.Lags, [2]int64{put, now})
				}
			}
		}
	}
	n, err := hasync.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer n.Close()
	var runErr error
	if role == "source" {
		runErr = source(ctx, n, f, &rep)
	} else {
		runErr = waitFile(ctx, filepath.Join(f.ctl, "stop"), 0)
	}
	rep.Stats = n.Stats()
	if runErr != nil {
		rep.Error = runErr.Error()
		// The test waiting for the next phase stops waiting.
		_ = os.WriteFile(filepath.Join(f.ctl, role+".failed"), []byte(rep.Error), 0o644)
	}
	mu.Lock()
	b, err := json.Marshal(rep)
	mu.Unlock()
	if err != nil {
		return err
	}
	fmt.Println(string(b))
	return runErr
}

// putTime reads the Put time a value carries ("...@<unix ns>").
func putTime(v string) (int64, error) {
	i := strings.LastIndexByte(v, '@')
	if i < 0 {
		return 0, fmt.Errorf("value %q carries no put time", v)
	}
	return strconv.ParseInt(v[i+1:], 10, 64)
}

// source runs the phases: steady puts (keys updated as the key space
// wraps) with every deleteEvery-th operation a deletion of a key put
// earlier, then a barrier.
func source(ctx context.Context, n *hasync.Node, f nodeFlags, rep *Report) error {
	var phases []int
	for _, s := range strings.Split(f.ops, ",") {
		k, err := strconv.Atoi(s)
		if err != nil || k < 1 {
			return fmt.Errorf("--ops %q: want positive counts", f.ops)
		}
		phases = append(phases, k)
	}
	if f.rate <= 0 || f.keys < 1 {
		return errors.New("--rate and --keys must be positive")
	}
	// The peer must be up first: a Put before it is carried by the
	// resync snapshot, and the phase would measure the handshake.
	if err := waitUntil(ctx, time.Minute, func() bool { return n.Up(peerOf(f)) }); err != nil {
		return fmt.Errorf("peer never up: %w", err)
	}
	op := 0
	for k, ops := range phases {
		if k > 0 {
			if err := waitFile(ctx, filepath.Join(f.ctl, fmt.Sprintf("go%d", k+1)), 10*time.Minute); err != nil {
				return err
			}
		}
		ph := Phase{Ops: ops, StartNs: time.Now().UnixNano()}
		tick := time.NewTicker(time.Duration(float64(time.Second) / f.rate))
		for i := 0; i < ops; i++ {
			select {
			case <-ctx.Done():
				tick.Stop()
				return ctx.Err()
			case <-tick.C:
			}
			if op%f.deleteEvery == f.deleteEvery-1 {
				// A key put a while ago (possibly deleted already: a no-op
				// then, as for any producer).
				key := fmt.Sprintf("k%05d", (op*13)%f.keys)
				delete(rep.Table, key)
				if err := n.Delete(1, []byte(key)); err != nil {
					return err
				}
				rep.Dels++
			} else {
				key := fmt.Sprintf("k%05d", op%f.keys)
				v := fmt.Sprintf("op%d-phase%d@%d", op, k+1, time.Now().UnixNano())
				rep.Table[key] = v
				if err := n.Put(hasync.Record{Kind: 1, Key: []byte(key), Value: []byte(v)}); err != nil {
					return err
				}
				rep.Puts++
			}
			op++
		}
		tick.Stop()
		// A barrier marks only the peers up when it is taken: one taken
		// while the peer is lost (the cut's last seconds, before the
		// redial) completes at once, having waited for nothing. The
		// phase's barrier waits for the peer to be back.
		if err := waitUntil(ctx, f.barrierTimeout, func() bool { return n.Up(peerOf(f)) }); err != nil {
			return fmt.Errorf("phase %d: peer not up again for the barrier: %w", k+1, err)
		}
		w, err := n.Barrier()
		if err != nil {
			return err
		}
		select {
		case <-w.Done():
		case <-time.After(f.barrierTimeout):
			return fmt.Errorf("phase %d: barrier not acknowledged by %v within %v", k+1, w.Release(), f.barrierTimeout)
		case <-ctx.Done():
			return ctx.Err()
		}
		ph.EndNs = time.Now().UnixNano()
		rep.Phases = append(rep.Phases, ph)
		if err := os.WriteFile(filepath.Join(f.ctl, fmt.Sprintf("phase%d.done", k+1)), nil, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func peerOf(f nodeFlags) string { name, _, _ := strings.Cut(f.peer, "="); return name }

func waitUntil(ctx context.Context, limit time.Duration, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v", limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// waitFile waits for path to exist (limit 0: no limit but ctx).
func waitFile(ctx context.Context, path string, limit time.Duration) error {
	if limit == 0 {
		limit = 24 * time.Hour
	}
	err := waitUntil(ctx, limit, func() bool { _, err := os.Stat(path); return err == nil })
	if err != nil {
		return fmt.Errorf("waiting for %s: %w", path, err)
	}
	return nil
}

// ProbeResult is what probe-recv prints: how the link treated numbered
// datagrams (the impairment the sync's TCP connection met).
type ProbeResult struct {
	Received int `json:"received"`
	// Reordered counts datagrams arriving after one numbered higher.
	Reordered int `json:"reordered"`
	Lost      int `json:"lost"`
}

func probeSend(args []string) error {
	fs := flag.NewFlagSet("probe-send", flag.ExitOnError)
	to := fs.String("to", "", "host:port")
	count := fs.Int("count", 1000, "datagrams")
	interval := fs.Duration("interval", time.Millisecond, "between datagrams")
	_ = fs.Parse(args)
	c, err := net.Dial("udp", *to)
	if err != nil {
		return err
	}
	defer c.Close()
	for i := 0; i < *count; i++ {
		if _, err := c.Write([]byte(strconv.Itoa(i))); err != nil {
			return err
		}
		time.Sleep(*interval)
	}
	return nil
}

func probeRecv(args []string) error {
	fs := flag.NewFlagSet("probe-recv", flag.ExitOnError)
	listen := fs.String("listen", "", "host:port")
	count := fs.Int("count", 1000, "datagrams the sender sends")
	idle := fs.Duration("idle", 3*time.Second, "end after this long without a datagram")
	ready := fs.String("ready", "", "file created once listening")
	_ = fs.Parse(args)
	c, err := net.ListenPacket("udp", *listen)
	if err != nil {
		return err
	}
	defer c.Close()
	if *ready != "" {
		if err := os.WriteFile(*ready, nil, 0o644); err != nil {
			return err
		}
	}
	seen := map[int]bool{}
	var res ProbeResult
	highest := -1
	buf := make([]byte, 64)
	for {
		_ = c.SetReadDeadline(time.Now().Add(*idle))
		k, _, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			return err
		}
		i, err := strconv.Atoi(string(buf[:k]))
		if err != nil || i < 0 || i >= *count || seen[i] {
			continue
		}
		seen[i] = true
		res.Received++
		if i < highest {
			res.Reordered++
		}
		highest = max(highest, i)
	}
	res.Lost = *count - res.Received
	b, _ := json.Marshal(res)
	fmt.Println(string(b))
	return nil
}
