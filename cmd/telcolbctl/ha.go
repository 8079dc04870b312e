package main

import (
	"context"
	"fmt"
	"io"
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
	tw := table(w)
	row(tw, "PEER", "UP", "SYNCED")
	for _, p := range st.Peers {
		row(tw, p.Name, fmt.Sprint(p.Up), fmt.Sprint(p.Synced))
	}
	return tw.Flush()
}
