package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/telcolb/telcolb/api"
)

// get bgp, get bfd, get vip: the node's advertisement state.
func (c *commands) getAdvertise(ctx context.Context, cl *api.Client, res string, args []string) error {
	if len(args) != 0 {
		return usagef("get %s: unexpected arguments %q", res, args)
	}
	if res == "vip" {
		list, err := cl.VIPs(ctx)
		if err != nil {
			return err
		}
		if c.g.output == "json" {
			return writeJSON(c.e.stdout, list)
		}
		return printVIPs(c.e.stdout, list, c.g.output == "wide")
	}
	st, err := cl.Advertisement(ctx)
	if err != nil {
		return err
	}
	if res == "bgp" {
		if c.g.output == "json" {
			return writeJSON(c.e.stdout, orEmpty(st.BGPPeers))
		}
		return printBGPPeers(c.e.stdout, st.BGPPeers, c.g.output == "wide")
	}
	if c.g.output == "json" {
		return writeJSON(c.e.stdout, orEmpty(st.BFDSessions))
	}
	return printBFDSessions(c.e.stdout, st.BFDSessions)
}

func orEmpty[T any](l []T) []T {
	if l == nil {
		return []T{}
	}
	return l
}

func printBGPPeers(w io.Writer, peers []api.BGPPeerStatus, wide bool) error {
	tw := table(w)
	head := []any{"PEER", "ADDRESS", "STATE", "SINCE", "PREFIXES-SENT", "BFD"}
	if wide {
		head = append(head, "LAST-DOWN-REASON")
	}
	row(tw, head...)
	for _, p := range peers {
		cols := []any{p.Name, p.Address, p.State, orDefault(p.Since, "-"), p.PrefixesSent, orDefault(p.BFD, "-")}
		if wide {
			cols = append(cols, orDefault(p.LastDownReason, "-"))
		}
		row(tw, cols...)
	}
	return tw.Flush()
}

func printBFDSessions(w io.Writer, list []api.BFDSessionStatus) error {
	tw := table(w)
	row(tw, "PEER", "MODE", "STATE", "SINCE", "DISCRIMINATOR", "TX-MS", "DETECT-MS", "REMOTE-DIAG")
	for _, b := range list {
		row(tw, b.Peer, orDefault(b.Mode, "-"), b.State, orDefault(b.Since, "-"), b.LocalDiscriminator, b.TransmitIntervalMs, b.DetectTimeMs, orDefault(b.RemoteDiagnostic, "-"))
	}
	return tw.Flush()
}

func printVIPs(w io.Writer, list []api.VIPStatus, wide bool) error {
	tw := table(w)
	head := []any{"VIP", "ANNOUNCED", "OWNER", "REASON"}
	if wide {
		head = append(head, "LOCAL", "SERVICES")
	}
	row(tw, head...)
	for _, v := range list {
		cols := []any{v.VIP, orDefault(strings.Join(v.Announced, ","), "-"), orDefault(v.Owner, "-"), orDefault(v.Reason, "-")}
		if wide {
			cols = append(cols, fmt.Sprint(v.Local), strings.Join(v.Services, ","))
		}
		row(tw, cols...)
	}
	return tw.Flush()
}
