package ha

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/l4"
)

// checkOnePortPerAssociation: every entry d holds of one SCTP association
// (service and client port: each association of the lab has its own) sends
// the endpoint the same source port. An association the node took up from
// its packets (the sync was behind at the failure: entries without the
// client's tag) gets an entry per path as its packets come; before the
// datapath gave them one port (lib/sctp_young.h) each path got a port hashed
// from its own tuple, and the endpoint took the second VIP's path as out of
// the blue: in a 200-association run on main, lb2 took up 50 young fullnat
// associations and all 50 had two ports, the second VIP's path with no reply.
// An entry made before any packet took that path cannot show it: the check
// runs once the TCP/UDP flows were asked through lb2 (about 50
// heartbeat-carrying SCTP messages later).
func checkOnePortPerAssociation(t *testing.T, ctx context.Context, d *l4.Daemon, who string) {
	t.Helper()
	conns, err := d.Client.Conntrack(ctx)
	if err != nil {
		t.Errorf("%s conntrack: %v", who, err)
		return
	}
	type assoc struct {
		svc   string
		cport uint16
	}
	type entry struct {
		line  string
		sport uint16
	}
	entries := map[assoc][]entry{}
	takenUp := map[assoc]bool{}
	for _, c := range conns {
		if c.Protocol != api.ProtocolSCTP {
			continue
		}
		client, err1 := netip.ParseAddrPort(c.Client)
		src, err2 := netip.ParseAddrPort(c.Source)
		if err1 != nil || err2 != nil {
			t.Errorf("%s: SCTP entry with client %q, source %q", who, c.Client, c.Source)
			continue
		}
		a := assoc{c.Service, client.Port()}
		entries[a] = append(entries[a], entry{fmt.Sprintf("%s->%s via %s", c.Client, c.VIP, c.Source), src.Port()})
		if strings.Trim(c.VTagClient, "0") == "" {
			takenUp[a] = true
		}
	}
	var bad []string
	multi := 0
	for a, es := range entries {
		if !takenUp[a] || len(es) < 2 {
			continue
		}
		multi++
		if slices.ContainsFunc(es, func(e entry) bool { return e.sport != es[0].sport }) {
			var lines []string
			for _, e := range es {
				lines = append(lines, e.line)
			}
			slices.Sort(lines)
			bad = append(bad, fmt.Sprintf("%s client port %d: %s", a.svc, a.cport, strings.Join(lines, "; ")))
		}
	}
	slices.Sort(bad)
	t.Logf("%s took up %d SCTP associations from their packets with more than one entry; %d with more than one source port", who, multi, len(bad))
	for _, b := range bad {
		t.Errorf("%s: one association, several source ports toward the endpoint: %s", who, b)
	}
}
