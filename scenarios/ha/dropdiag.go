package ha

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/telcolb/telcolb/scenarios/lab"
)

// Drop counters of the lab's namespaces, a diagnostic: a packet the kernel
// drops on the way (a full socket buffer, a full qdisc, a discard in IP)
// costs the SCTP sender a whole RTO, which is how a UE ends up answered
// more than a second after a failover. Comparing two snapshots names the
// namespace and the layer that dropped.
//
// Counters read in each namespace (through `ip netns exec`, so /proc/net is
// the namespace's own):
//   - /proc/net/snmp Ip:InDiscards and Ip:OutDiscards (usrsctp sends with
//     MSG_DONTWAIT: a full raw socket send buffer is an OutDiscard),
//   - /proc/net/dev rx and tx drops per interface,
//   - /proc/net/raw and raw6 drops per raw socket (usrsctp's receive side),
//     keyed by protocol and inode.

// dropSnapshot maps "host counter" to its value.
type dropSnapshot map[string]uint64

// snapshotDrops reads the drop counters of every host; a host that cannot
// be read is recorded as such, not fatal (lb1's namespace after the kill
// is still there, but a diagnostic must never fail the test itself).
func snapshotDrops(ctx context.Context, hosts []*lab.Host) (dropSnapshot, []string) {
	snap := dropSnapshot{}
	var errs []string
	for _, h := range hosts {
		out, err := h.Exec(ctx, "sh", "-c", "echo '## snmp'; cat /proc/net/snmp; echo '## dev'; cat /proc/net/dev; "+
			"echo '## raw'; cat /proc/net/raw; echo '## raw6'; cat /proc/net/raw6")
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		for k, v := range parseDropCounters(string(out)) {
			snap[h.Name+" "+k] = v
		}
	}
	return snap, errs
}

// parseDropCounters parses the output of the files above, each after a
// "## name" line.
func parseDropCounters(out string) map[string]uint64 {
	c := map[string]uint64{}
	section := ""
	var ipHeader []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if name, ok := strings.CutPrefix(line, "## "); ok {
			section = name
			continue
		}
		f := strings.Fields(line)
		switch section {
		case "snmp":
			if len(f) == 0 || f[0] != "Ip:" {
				continue
			}
			if ipHeader == nil {
				ipHeader = f
				continue
			}
			for i := 1; i < len(f) && i < len(ipHeader); i++ {
				if ipHeader[i] == "InDiscards" || ipHeader[i] == "OutDiscards" {
					c["Ip:"+ipHeader[i]], _ = strconv.ParseUint(f[i], 10, 64)
				}
			}
		case "dev":
			// "eth0: rxbytes rxpackets rxerrs rxdrop ... txbytes txpackets txerrs txdrop ..."
			name, rest, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			v := strings.Fields(rest)
			if len(v) < 12 {
				continue
			}
			name = strings.TrimSpace(name)
			c["dev "+name+" rx_drop"], _ = strconv.ParseUint(v[3], 10, 64)
			c["dev "+name+" tx_drop"], _ = strconv.ParseUint(v[11], 10, 64)
		case "raw", "raw6":
			// sl local_address rem_address st tx_queue:rx_queue tr:tm->when
			// retrnsmt uid timeout inode ref pointer drops; the local
			// address's port is the protocol (0084: SCTP).
			if len(f) < 13 || f[0] == "sl" {
				continue
			}
			proto := f[1][strings.LastIndexByte(f[1], ':')+1:]
			d, _ := strconv.ParseUint(f[len(f)-1], 10, 64)
			c[fmt.Sprintf("%s proto %s inode %s drops", section, proto, f[9])] = d
		}
	}
	return c
}

// dropsGrown lists the counters that grew from before to after, sorted.
// A counter absent before (a socket opened since) counts from 0.
func dropsGrown(before, after dropSnapshot) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(after)) {
		if d := after[k] - before[k]; after[k] > before[k] {
			out = append(out, fmt.Sprintf("%s +%d", k, d))
		}
	}
	return out
}

// dropWatch is a snapshot of the lab's drop counters taken before a
// failure.
type dropWatch struct {
	hosts  []*lab.Host
	before dropSnapshot
}

func watchDrops(ctx context.Context, hosts []*lab.Host) *dropWatch {
	before, _ := snapshotDrops(ctx, hosts)
	return &dropWatch{hosts: hosts, before: before}
}

// check fails the test when a raw SCTP socket (protocol 0x84: usrsctp's)
// dropped since the snapshot: each drop there costs its sender an RTO. It
// logs every counter that grew when the test has failed by its end or
// late says a UE was answered late.
func (w *dropWatch) check(t *testing.T, ctx context.Context, late bool) {
	t.Helper()
	after, errs := snapshotDrops(ctx, w.hosts)
	grown := dropsGrown(w.before, after)
	for _, g := range grown {
		if strings.Contains(g, "proto 0084") {
			t.Errorf("a raw SCTP socket dropped packets during the failover: %s", g)
		}
	}
	t.Cleanup(func() {
		if t.Failed() || late {
			t.Logf("drop counters grown from the failure to the last answer: %v (unreadable: %v)", grown, errs)
		}
	})
}
