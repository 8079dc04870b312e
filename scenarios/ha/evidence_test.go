package ha

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/scenarios/capture"
	"github.com/telcolb/telcolb/scenarios/lab"
)

// keepEvidence, with TELCOLB_KEEP_CAPTURES=dir, records the lab's traffic
// from the start (the client's link and the switch ports of lb1, lb2 and
// the endpoint host: the switch's side of lb1's link stays up while lb1's
// is down, so one capture spans the failure and the rejoin) and, when the
// test fails, keeps the captures and a dump of each node's pinned
// conntrack, association and drop maps in dir/<test>-<time>/. A flake seen
// once (an SCTP stream stalled after a failover) is otherwise gone with
// the test's temporary directory. Registered after the daemons' teardown,
// so it runs before it.
func (lb *lab2) keepEvidence(t *testing.T, ctx context.Context) {
	t.Helper()
	dir := os.Getenv("TELCOLB_KEEP_CAPTURES")
	if dir == "" {
		return
	}
	tmp := t.TempDir()
	type point struct {
		h   *lab.Host
		ifc string
	}
	points := []point{{lb.topo.Client, "eth0"}, {lb.topo.Switch, "pb"}}
	for i := range lb.topo.Nodes {
		points = append(points, point{lb.topo.Switch, fmt.Sprintf("p%d", i+1)})
	}
	var caps []*capture.Capture
	for _, p := range points {
		c, err := capture.StartSnap(ctx, p.h, p.ifc, tmp, 256)
		if err != nil {
			t.Fatalf("capture: %v", err)
		}
		caps = append(caps, c)
	}
	t.Cleanup(func() {
		for _, c := range caps {
			if err := c.Stop(); err != nil {
				t.Logf("capture: %v", err)
			}
		}
		if !t.Failed() {
			return
		}
		dst := filepath.Join(dir, fmt.Sprintf("%s-%s", strings.ReplaceAll(t.Name(), "/", "_"), time.Now().UTC().Format("150405")))
		if err := os.MkdirAll(dst, 0o755); err != nil {
			t.Logf("keeping the evidence: %v", err)
			return
		}
		for _, c := range caps {
			if err := os.Rename(c.File, filepath.Join(dst, filepath.Base(c.File))); err != nil {
				t.Logf("keeping %s: %v", c.File, err)
			}
		}
		for i, d := range lb.daemons {
			for _, m := range []string{"assocs", "conntrack", "conntrack4", "drops", "steer_stats"} {
				pin := filepath.Join(d.PinPath(), m)
				out, err := exec.Command("bpftool", "-j", "map", "dump", "pinned", pin).CombinedOutput()
				if err != nil {
					t.Logf("lb%d %s: %v: %s", i+1, m, err, out)
					continue
				}
				if err := os.WriteFile(filepath.Join(dst, fmt.Sprintf("lb%d-%s.json", i+1, m)), out, 0o644); err != nil {
					t.Logf("keeping lb%d %s: %v", i+1, m, err)
				}
			}
			if err := os.WriteFile(filepath.Join(dst, fmt.Sprintf("lb%d.log", i+1)), []byte(d.Log()), 0o644); err != nil {
				t.Logf("keeping lb%d's log: %v", i+1, err)
			}
		}
		t.Logf("evidence kept in %s", dst)
	})
}
