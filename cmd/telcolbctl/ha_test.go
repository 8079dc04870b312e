package main

import (
	"strings"
	"testing"

	"github.com/telcolb/telcolb/api"
)

// get ha says whether a drain still waits for the peers (and which), or
// withdrew, and why.
func TestPrintHADrain(t *testing.T) {
	st := api.HAStatus{Enabled: true, Node: "lb1", Ready: true, Peers: []api.HAPeerStatus{{Name: "lb2", Up: true, Synced: true}}}
	for _, c := range []struct {
		drain *api.HADrainStatus
		want  string
	}{
		{nil, ""},
		{&api.HADrainStatus{State: api.HADrainWaiting, Peers: []string{"lb2", "lb3"}, WaitSeconds: 1.25}, "draining: VIPs still announced, waiting 1.25s for the acknowledgement of lb2, lb3"},
		{&api.HADrainStatus{State: api.HADrainAcknowledged, WaitSeconds: 0.012}, "drained: every peer up acknowledged every change after 12ms; VIPs withdrawn"},
		{&api.HADrainStatus{State: api.HADrainTimeout, Peers: []string{"lb2"}, WaitSeconds: 5}, "drained: VIPs withdrawn after 5s without the acknowledgement of lb2 (drain timeout)"},
		{&api.HADrainStatus{State: api.HADrainNoPeer}, "drained: VIPs withdrawn with no peer up (no node holds this node's flows)"},
	} {
		st.Drain = c.drain
		var b strings.Builder
		if err := printHA(&b, st); err != nil {
			t.Fatal(err)
		}
		got := b.String()
		if c.want == "" {
			if strings.Contains(got, "drain") {
				t.Errorf("no drain, printed:\n%s", got)
			}
			continue
		}
		if !strings.Contains(got, c.want+"\n") {
			t.Errorf("drain %+v printed:\n%s\nwant the line %q", *c.drain, got, c.want)
		}
	}
}

// get ha shows each peer's retransmission timeout and the acknowledgement
// delay it follows ("-" before anything was acknowledged).
func TestPrintHAPeerTimers(t *testing.T) {
	st := api.HAStatus{Enabled: true, Node: "lb1", Ready: true, Peers: []api.HAPeerStatus{
		{Name: "lb2", Up: true, Synced: true, RetransmitTimeoutSeconds: 0.4625, AckDelaySeconds: 0.12375},
		{Name: "lb3", RetransmitTimeoutSeconds: 0.2},
	}}
	var b strings.Builder
	if err := printHA(&b, st); err != nil {
		t.Fatal(err)
	}
	for _, want := range [][]string{{"PEER", "UP", "SYNCED", "RTO", "ACK-DELAY"}, {"lb2", "true", "true", "463ms", "123.8ms"}, {"lb3", "false", "false", "200ms", "-"}} {
		found := false
		for _, line := range strings.Split(b.String(), "\n") {
			found = found || strings.Join(strings.Fields(line), " ") == strings.Join(want, " ")
		}
		if !found {
			t.Errorf("get ha printed:\n%s\nwant the row %q", b.String(), want)
		}
	}
}
