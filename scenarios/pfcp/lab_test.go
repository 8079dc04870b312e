package pfcp

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/capture"
	"github.com/telcolb/telcolb/scenarios/l4"
	"github.com/telcolb/telcolb/scenarios/lab"
)

// Lab addresses: the SMF on 10.79.1.0/24 (lb .1, SMF .2), UPF k on
// 10.79.(10+k).0/24 (lb .1, UPF .2); the N4 VIP sits on the lb's SMF-side
// interface and every UPF routes to it through the lb.
var labVIP = netip.MustParseAddr("10.79.100.1")

// labSessions is the number of PFCP sessions of the lab run. TELCOLB_N4_SESSIONS
// overrides it (the 10,000 is the default).
func labSessions() int {
	if n, err := strconv.Atoi(os.Getenv("TELCOLB_N4_SESSIONS")); err == nil && n > 0 {
		return n
	}
	return 10000
}

func buildCmds(t *testing.T, ctx context.Context, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range names {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, name), "github.com/telcolb/telcolb/scenarios/pfcp/cmd/"+name)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", name, err, out)
		}
	}
	return dir
}

func link(t *testing.T, ctx context.Context, l *lab.Lab, lb, peer *lab.Host, lbIf string, n int) netip.Addr {
	t.Helper()
	if _, _, err := l.Connect(ctx, lb, lbIf, peer, "eth0"); err != nil {
		t.Fatal(err)
	}
	lbAddr := netip.AddrFrom4([4]byte{10, 79, byte(n), 1})
	peerAddr := netip.AddrFrom4([4]byte{10, 79, byte(n), 2})
	if err := lb.AddAddr(ctx, lbIf, netip.PrefixFrom(lbAddr, 24)); err != nil {
		t.Fatal(err)
	}
	if err := peer.AddAddr(ctx, "eth0", netip.PrefixFrom(peerAddr, 24)); err != nil {
		t.Fatal(err)
	}
	if err := peer.AddRoute(ctx, netip.Prefix{}, lbAddr); err != nil {
		t.Fatal(err)
	}
	return peerAddr
}

// lastJSON is lab.Proc.LastJSON, fatal on error.
func lastJSON(t *testing.T, p *lab.Proc, event string, v any) {
	t.Helper()
	if err := p.LastJSON(event, v); err != nil {
		t.Fatal(err)
	}
}

type upfStats struct {
	Associations, Established, Modified, Deleted, ReportsAnswered, Duplicates, Unknown, Sessions int
}

// metric reads one sample of the daemon's /metrics (0 when absent).
func metric(t *testing.T, d *l4.Daemon, lb *lab.Host, series string) float64 {
	t.Helper()
	b, err := d.Metrics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(b, "\n") {
		if strings.HasPrefix(line, series+" ") {
			v, _ := strconv.ParseFloat(strings.TrimPrefix(line, series+" "), 64)
			return v
		}
	}
	return 0
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestN4LabThroughTheDaemon: an SMF simulator and three UPF simulators,
// separate processes in their own namespaces, with the real daemon between
// them. The SMF link duplicates, reorders and drops datagrams both ways.
// Mid-run, the daemon is killed (kill -9) and restarted on its state.
// Sessions are established, reported on (one Session Report Request each),
// modified; then UPF 2 restarts (new Recovery Time Stamp, UP-initiated
// association) and gets its sessions replayed, and UPF 3 is killed and its
// sessions moved; then every session is modified again and deleted. The
// SMF must see every answer with its own SEID, no UP SEID collision
// although the UPFs allocate the same SEIDs, no rejection and no change of
// Recovery Time Stamp; tshark must decode every captured PFCP message on
// both sides without a malformed flag.
func TestN4LabThroughTheDaemon(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("the N4 lab needs root in CI")
		}
		t.Skip("needs root for network namespaces")
	}
	for _, tool := range []string{"dumpcap", "tshark", "nsenter", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed (hack/install-deps.sh installs it)", tool)
		}
	}
	sessions := labSessions()
	// 300 s ran out on the loaded 2-core machine (3,000 sessions took
	// 244-314 s with the report burst): the budget is generous.
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Second)
	defer cancel()
	dir := buildCmds(t, ctx, "smfsim", "upfsim")
	smfsim, upfsim := filepath.Join(dir, "smfsim"), filepath.Join(dir, "upfsim")
	bin, err := l4.Build(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	l := lab.NewEmpty(t)
	lb, err := l.AddHost(ctx, "lb")
	if err != nil {
		t.Fatal(err)
	}
	smfHost, err := l.AddHost(ctx, "smf")
	if err != nil {
		t.Fatal(err)
	}
	smfAddr := link(t, ctx, l, lb, smfHost, "n4smf", 1)
	var upfHosts []*lab.Host
	var upfAddrs []netip.Addr
	for k := 1; k <= 3; k++ {
		h, err := l.AddHost(ctx, fmt.Sprintf("upf%d", k))
		if err != nil {
			t.Fatal(err)
		}
		upfHosts = append(upfHosts, h)
		upfAddrs = append(upfAddrs, link(t, ctx, l, lb, h, fmt.Sprintf("n4upf%d", k), 10+k))
	}
	// The VIP is not added here: the daemon makes it a local address
	// (telcolb0) when the service is applied, which the test checks.
	pin := filepath.Join("/sys/fs/bpf", "telcolb-n4-"+l.ID)
	d, err := l4.StartDaemon(ctx, l4.DaemonConfig{Bin: bin, Host: lb, Interfaces: []string{"n4smf"}, StateDir: t.TempDir(), PinPath: pin,
		ExtraArgs: []string{"--pfcp-heartbeat-interval=2s", "--pfcp-upf-loss=move"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Destroy(context.Background()); err != nil {
			t.Errorf("daemon destroy: %v", err)
		}
	})
	defer func() {
		if t.Failed() {
			t.Logf("daemon log (tail):\n%s", tail(d.Log(), 60))
		}
	}()
	startUPF := func(k int, extra ...string) *lab.Proc {
		args := append([]string{"--listen", netip.AddrPortFrom(upfAddrs[k], 8805).String(), "--report", "--n1", "20"}, extra...)
		p, err := upfHosts[k].Start(upfsim, args...)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.WaitOutput(ctx, `"event":"listening"`); err != nil {
			t.Fatalf("upf%d: %v: %s", k+1, err, p.Stderr())
		}
		return p
	}
	svc := api.Service{Name: "n4", VIP: labVIP.String(), Port: 8805, Protocol: api.ProtocolUDP, PFCP: true}
	upfs := make([]*lab.Proc, 3)
	for k := range upfHosts {
		upfs[k] = startUPF(k)
		svc.Endpoints = append(svc.Endpoints, api.Endpoint{Address: upfAddrs[k].String(), Port: 8805})
	}
	capDir := t.TempDir()
	var caps []*capture.Capture
	for _, iface := range []string{"n4smf", "n4upf1"} {
		c, err := capture.Start(ctx, lb, iface, capDir)
		if err != nil {
			t.Fatal(err)
		}
		caps = append(caps, c)
	}
	if err := d.Client.ApplyService(ctx, svc); err != nil {
		t.Fatalf("create the PFCP service: %v", err)
	}
	l4.RequireLocalVIP(t, ctx, lb, labVIP)
	waitFor(t, "three UPF associations", 10*time.Second, func() bool {
		st, err := d.Client.GetService(ctx, "n4")
		return err == nil && st.Endpoints[0].Healthy && st.Endpoints[1].Healthy && st.Endpoints[2].Healthy
	})
	// Impairments on the SMF link, both directions: netem where the kernel
	// has sch_netem, else the same in the SMF process (smfsim --loss ...).
	netem := []string{"netem", "delay", "2ms", "1ms", "duplicate", "3%", "loss", "2%", "reorder", "10%"}
	impair := []string{"--loss", "2", "--duplicate", "3", "--reorder", "10"}
	for _, x := range []struct {
		h     *lab.Host
		iface string
	}{{smfHost, "eth0"}, {lb, "n4smf"}} {
		if out, err := x.h.Exec(ctx, "tc", append([]string{"qdisc", "add", "dev", x.iface, "root"}, netem...)...); err != nil {
			t.Logf("no netem here (%v: %s): the SMF process impairs its link itself", err, strings.TrimSpace(string(out)))
			break
		}
		impair = nil
	}
	pause := filepath.Join(t.TempDir(), "go-on")
	start := time.Now()
	smfArgs := append([]string{}, "--bind", smfAddr.String(), "--peer", netip.AddrPortFrom(labVIP, 8805).String(),
		"--sessions", fmt.Sprint(sessions), "--window", "128", "--t1", "500ms", "--n1", "6", "--report-wait", "60s", "--pause-file", pause)
	smfArgs = append(smfArgs, impair...)
	smf, err := smfHost.Start(smfsim, smfArgs...)
	if err != nil {
		t.Fatal(err)
	}
	if err := smf.WaitOutput(ctx, `"event":"paused"`); err != nil {
		t.Fatalf("smf: %v\n%s\n%s", err, smf.Stdout(), smf.Stderr())
	}
	t.Logf("%d sessions established, modified once and reported on in %v", sessions, time.Since(start).Round(time.Millisecond))
	out, err := d.Ctl(ctx, "get", "lb", "-o", "wide")
	if err != nil || !strings.Contains(out, " pfcp ") {
		t.Errorf("telcolbctl get lb -o wide: %v\n%s", err, out)
	}
	t.Logf("\n%s", out)
	st, err := d.Client.GetService(ctx, "n4")
	if err != nil {
		t.Fatal(err)
	}
	held := []uint64{st.Endpoints[0].ActiveConnections, st.Endpoints[1].ActiveConnections, st.Endpoints[2].ActiveConnections}
	if st.ActiveConnections != uint64(sessions) {
		t.Fatalf("daemon holds %d sessions, want %d", st.ActiveConnections, sessions)
	}

	// UPF 2 restarts: a new process, a new Recovery Time Stamp, no sessions;
	// it associates to the proxy itself.
	var before [3]upfStats
	if err := upfs[1].Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = upfs[1].Wait(ctx)
	lastJSON(t, upfs[1], "stats", &before[1])
	replayStart := time.Now()
	upfs[1] = startUPF(1, "--associate", netip.AddrPortFrom(labVIP, 8805).String())
	replays := fmt.Sprintf(`telcolb_pfcp_replays_total{proxy="n4",upf="%v:8805"}`, upfAddrs[1])
	waitFor(t, "UPF 2's sessions replayed", 30*time.Second, func() bool { return metric(t, d, lb, replays) >= float64(held[1]) })
	t.Logf("replayed %d sessions to the restarted UPF in %v", held[1], time.Since(replayStart).Round(time.Millisecond))

	// UPF 3 dies: its sessions move to the others.
	if err := upfs[2].Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = upfs[2].Wait(ctx)
	killed := time.Now()
	waitFor(t, "UPF 3's sessions moved", 90*time.Second, func() bool {
		st, err := d.Client.GetService(ctx, "n4")
		return err == nil && st.Endpoints[2].ActiveConnections == 0 && st.ActiveConnections == uint64(sessions)
	})
	moved := metric(t, d, lb, fmt.Sprintf(`telcolb_pfcp_replays_total{proxy="n4",upf="%v:8805"}`, upfAddrs[0])) +
		metric(t, d, lb, replays) - float64(held[1])
	waitFor(t, "moved sessions replayed", 30*time.Second, func() bool {
		moved = metric(t, d, lb, fmt.Sprintf(`telcolb_pfcp_replays_total{proxy="n4",upf="%v:8805"}`, upfAddrs[0])) +
			metric(t, d, lb, replays) - float64(held[1])
		return moved >= float64(held[2])
	})
	t.Logf("moved %d sessions of the killed UPF %v after the kill", held[2], time.Since(killed).Round(time.Millisecond))

	// The daemon crashes (kill -9) and comes back on its state dir: the
	// SMF, mid-run, must notice nothing (same Recovery Time Stamp, every
	// SEID still answering), and the UPFs get nothing replayed. The crash
	// comes while the UPFs stream Session Reports (one per session, a
	// burst on SIGUSR1), so some are relayed and unanswered at the crash:
	// the restored proxy must send those again only as retransmissions
	// (same sequence number), and the SMF's count below must not exceed
	// the reports sent. The UPFs retransmit a report up to 20 times, 1s
	// apart, so those sent while the daemon is down survive its absence.
	wantReportsSoFar := float64(sessions) + float64(held[1]) + float64(held[2])
	reportsIn := `telcolb_pfcp_messages_total{proxy="n4",side="upf",type="session-report-request"}`
	reportsOut := `telcolb_pfcp_messages_total{proxy="n4",side="smf",type="session-report-response"}`
	waitFor(t, "every report so far relayed and answered", 60*time.Second, func() bool {
		return metric(t, d, lb, reportsIn) >= wantReportsSoFar && metric(t, d, lb, reportsOut) >= wantReportsSoFar
	})
	time.Sleep(time.Second) // the last answers reach the UPFs
	replaysBefore := metric(t, d, lb, fmt.Sprintf(`telcolb_pfcp_replays_total{proxy="n4",upf="%v:8805"}`, upfAddrs[0])) + metric(t, d, lb, replays)
	for _, k := range []int{0, 1} {
		if err := upfs[k].Signal(syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
	}
	// Kill once a tenth of the burst is relayed: reports are in flight.
	waitFor(t, "the report burst under way", 60*time.Second, func() bool {
		return metric(t, d, lb, reportsIn) >= wantReportsSoFar+float64(sessions)/10
	})
	in := metric(t, d, lb, reportsIn)
	if err := d.Kill(); err != nil {
		t.Fatal(err)
	}
	crashed := time.Now()
	t.Logf("daemon killed during the report burst (at the last scrape %v of its %d reports had reached the proxy)", in-wantReportsSoFar, sessions)
	if err := d.Start(ctx); err != nil {
		t.Fatalf("restart the killed daemon: %v", err)
	}
	waitFor(t, "the restarted daemon's proxy to hold every session", 30*time.Second, func() bool {
		st, err := d.Client.GetService(ctx, "n4")
		return err == nil && st.ActiveConnections == uint64(sessions) && st.Endpoints[0].Healthy && st.Endpoints[1].Healthy
	})
	t.Logf("daemon killed and back with %d sessions in %v", sessions, time.Since(crashed).Round(time.Millisecond))
	burstSent, burstLost := 0, 0
	for _, k := range []int{0, 1} {
		if err := upfs[k].WaitOutput(ctx, `"event":"burst-done"`); err != nil {
			t.Fatalf("upf%d: report burst: %v", k+1, err)
		}
		var b struct{ Sent, Unanswered int }
		lastJSON(t, upfs[k], "burst-done", &b)
		burstSent, burstLost = burstSent+b.Sent, burstLost+b.Unanswered
	}
	t.Logf("report burst: %d sent by the UPFs, %d given up", burstSent, burstLost)
	if burstSent != sessions {
		t.Errorf("the UPFs sent %d reports in the burst, hold %d sessions", burstSent, sessions)
	}
	if r := metric(t, d, lb, fmt.Sprintf(`telcolb_pfcp_replays_total{proxy="n4",upf="%v:8805"}`, upfAddrs[0])) + metric(t, d, lb, replays); r != 0 {
		t.Errorf("the restarted daemon replayed %v sessions to UPFs that did not restart (before the crash: %v)", r, replaysBefore)
	}

	if err := os.WriteFile(pause, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := smf.Wait(ctx); err != nil {
		t.Fatalf("smf: %v\n%s", err, smf.Stderr())
	}
	var done struct {
		Stats   SMFStats
		Seconds float64
		Error   string
	}
	lastJSON(t, smf, "done", &done)
	s := done.Stats
	t.Logf("SMF: %+v in %.1fs", s, done.Seconds)
	if done.Error != "" {
		t.Errorf("SMF run: %s", done.Error)
	}
	// Every established session reports once; replayed and moved ones
	// report again (the UPF sims report after every establishment), and
	// every session once more in the burst. A report is never delivered
	// twice as two requests (the daemon's crash in the burst included);
	// under CPU starvation a UPF may give up on a few.
	wantReports := sessions + int(held[1]) + int(held[2]) + burstSent
	if s.Reports < wantReports*99/100 {
		t.Errorf("SMF got %d Session Reports, want %d (at least 99%%)", s.Reports, wantReports)
	}
	if s.Established != sessions || s.Modified != 2*sessions || s.Deleted != sessions || s.Reports > wantReports ||
		s.Rejected != 0 || s.Collisions != 0 || s.WrongSEID != 0 || s.RecoveryChanges != 0 {
		t.Errorf("SMF saw %+v; want %d established, %d modified, %d deleted, %d reports, nothing else", s, sessions, 2*sessions, sessions, wantReports)
	}
	var after [3]upfStats
	for _, k := range []int{0, 1} {
		if err := upfs[k].Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		_ = upfs[k].Wait(ctx)
		lastJSON(t, upfs[k], "stats", &after[k])
	}
	// Each request acted on once: every session deleted exactly once, on
	// the UPF holding it, none left, none unknown.
	if after[0].Deleted+after[1].Deleted != sessions || after[0].Unknown+after[1].Unknown+before[1].Unknown != 0 ||
		after[0].Sessions+after[1].Sessions != 0 {
		t.Errorf("UPFs: upf1 %+v, upf2 before restart %+v, after %+v", after[0], before[1], after[1])
	}
	// Modifications applied: round one on the first incarnations, round
	// two everywhere, plus one replayed per restarted or moved session.
	mods := after[0].Modified + after[1].Modified + before[1].Modified
	if want := sessions - int(held[2]) + sessions + int(held[1]) + int(held[2]); mods != want {
		t.Errorf("UPFs applied %d modifications, want %d (upf3's round-one modifications died with it)", mods, want)
	}
	absorbed := metric(t, d, lb, `telcolb_pfcp_retransmissions_absorbed_total{proxy="n4"}`)
	t.Logf("retransmissions and duplicates absorbed by the proxy: %v; SMF duplicate answers %d, duplicate reports %d", absorbed, s.Unmatched, s.DuplicateReports)
	if absorbed == 0 {
		t.Error("netem duplicated and dropped on the SMF link, yet the proxy absorbed no retransmission")
	}

	checkPFCPCaptures(t, ctx, caps, sessions)
}

// checkPFCPCaptures stops each capture and requires tshark to decode at
// least min PFCP messages in it, none flagged malformed (its complaint
// about the enterprise IE it has no dissector for is tolerated).
func checkPFCPCaptures(t *testing.T, ctx context.Context, caps []*capture.Capture, min int) {
	t.Helper()
	for _, c := range caps {
		if err := c.Stop(); err != nil {
			t.Fatal(err)
		}
		rows, err := capture.Fields(ctx, c.File, "pfcp", "pfcp.msg_type", "_ws.malformed", "_ws.expert.message")
		if err != nil {
			t.Fatal(err)
		}
		bad := 0
		for _, r := range rows {
			if r[1] != "" || (strings.Contains(r[2], "alformed") && !strings.Contains(r[2], "No vendor dissector")) {
				bad++
				if bad < 5 {
					t.Errorf("%s: tshark flags a PFCP message: %q", c.File, r)
				}
			}
		}
		if len(rows) < min {
			t.Errorf("%s: %d PFCP messages captured", c.File, len(rows))
		}
		t.Logf("%s: tshark decoded %d PFCP messages, %d flagged", filepath.Base(c.File), len(rows), bad)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
