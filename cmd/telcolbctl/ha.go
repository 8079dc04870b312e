package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/telcolb/telcolb/api"
)

// get ha: the node's HA conntrack sync.
func (c *commands) getHA(ctx context.Context, cl *api.Client, args []string) error {
	if len(args) != 0 {
		return usagef("get ha: unexpected arguments %q", args)
	}
	st, err := cl.HA(ctx)
	if err != nil {
		return err
	}
	if c.g.output == "json" {
		return writeJSON(c.e.stdout, st)
	}
	return printHA(c.e.stdout, st)
}

func printHA(w io.Writer, st api.HAStatus) error {
	if !st.Enabled {
		_, err := fmt.Fprintln(w, "HA sync off (no --ha-node-name)")
		return err
	}
	ready := "ready"
	if !st.Ready {
		ready = "not ready: " + st.NotReady
	}
	lag := time.Duration(st.LagP99Seconds * float64(time.Second))
	if _, err := fmt.Fprintf(w, "node %s, %s; %d records from peers; sent %d (resent %d), received %d; lag p99 <= %v\n",
		st.Node, ready, st.Entries, st.RecordsSent, st.RecordsResent, st.RecordsReceived, lag); err != nil {
		return err
	}
	if d := st.Drain; d != nil {
		if _, err := fmt.Fprintln(w, drainLine(*d)); err != nil {
			return err
		}
	}
	tw := table(w)
	row(tw, "PEER", "UP", "SYNCED", "RTO", "ACK-DELAY")
	for _, p := range st.Peers {
		ack := "-" // nothing acknowledged yet
		if p.AckDelaySeconds > 0 {
			ack = seconds(p.AckDelaySeconds).Round(100 * time.Microsecond).String()
		}
		row(tw, p.Name, fmt.Sprint(p.Up), fmt.Sprint(p.Synced), seconds(p.RetransmitTimeoutSeconds).Round(time.Millisecond).String(), ack)
	}
	return tw.Flush()
}

// drainLine says where a planned drain stands: still announcing while it
// waits for the peers' acknowledgement, or withdrawn and why.
func drainLine(d api.HADrainStatus) string {
	waited := time.Duration(d.WaitSeconds * float64(time.Second)).Round(time.Millisecond)
	peers := strings.Join(d.Peers, ", ")
	switch d.State {
	case api.HADrainWaiting:
		return fmt.Sprintf("draining: VIPs still announced, waiting %v for the acknowledgement of %s", waited, peers)
	case api.HADrainAcknowledged:
		return fmt.Sprintf("drained: every peer up acknowledged every change after %v; VIPs withdrawn", waited)
	case api.HADrainNoPeer:
		return "drained: VIPs withdrawn with no peer up (no node holds this node's flows)"
	case api.HADrainTimeout:
		return fmt.Sprintf("drained: VIPs withdrawn after %v without the acknowledgement of %s (drain timeout)", waited, peers)
	}
	return "drain: " + d.State
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
