package diameter

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestMessagesDecodeInTshark checks against an independent decoder the
// messages of the samples, the captured ones, the ones Build produces and
// the agent's edits of them: each is wrapped in TCP port 3868 by text2pcap
// and read back by tshark, which must agree on command, flags, hop-by-hop
// and end-to-end identifiers, Session-Id and Result-Code, and flag nothing
// as malformed.
func TestMessagesDecodeInTshark(t *testing.T) {
	for _, tool := range []string{"text2pcap", "tshark"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s not installed (hack/install-deps.sh installs it)", tool)
			}
			t.Skipf("%s not installed", tool)
		}
	}
	var msgs [][]byte
	for _, s := range godiameterSamples(t) {
		msgs = append(msgs, s.b)
	}
	for _, b := range foreignSamples(t) {
		msgs = append(msgs, b)
	}
	id := Identity{"agent.example.org", "example.org"}
	caps := Capabilities{Identity: id, HostIPs: []netip.Addr{netip.MustParseAddr("10.1.2.3")}, ProductName: "telcolb",
		AuthApps: []uint32{AppRelay}, OriginState: 5}
	req, _ := Parse(ccr(t))
	msgs = append(msgs, CER(caps, 1, 2), CEA(Header{HopByHop: 1, EndToEnd: 2}, caps, Success), DWR(id, 5, 3, 4),
		Answer(Header{Code: CmdDeviceWatchdog, HopByHop: 3, EndToEnd: 4}, nil, id, Success),
		DPR(id, DisconnectBusy, 5, 6), Answer(req.Header, req.SessionID, id, LoopDetected))
	edited := append([]byte(nil), ccr(t)...)
	SetHopByHop(edited, 0x01020304)
	SetRetransmit(edited)
	msgs = append(msgs, AppendAVP(edited, RouteRecord(id.Host)))
	// An error answer whose Failed-AVP holds a well-formed AVP (tshark
	// rightly flags one echoing reserved bits or a wrong length).
	bad := AppendAVP(append([]byte(nil), ccr(t)...), Str(AVPDestinationHost, "second"))
	_, err := Parse(bad)
	ans, _ := ErrorAnswer(bad, err.(*Error), id)
	msgs = append(msgs, ans)

	lines := tsharkFields(t, msgs, "diameter.cmd.code", "diameter.flags", "diameter.hopbyhopid", "diameter.endtoendid",
		"diameter.Session-Id", "diameter.Result-Code", "_ws.malformed", "_ws.expert.severity")
	for i, b := range msgs {
		m, err := Parse(b)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		f := lines[i]
		wantRes := ""
		if m.HasResult {
			wantRes = strconv.Itoa(int(m.ResultCode))
		}
		flags, _ := strconv.ParseUint(strings.TrimPrefix(f[1], "0x"), 16, 8)
		hbh, _ := strconv.ParseUint(strings.TrimPrefix(f[2], "0x"), 16, 32)
		e2e, _ := strconv.ParseUint(strings.TrimPrefix(f[3], "0x"), 16, 32)
		if f[0] != strconv.Itoa(int(m.Code)) || uint8(flags) != m.Flags || uint32(hbh) != m.HopByHop || uint32(e2e) != m.EndToEnd ||
			f[4] != string(m.SessionID) || f[5] != wantRes || f[6] != "" {
			t.Errorf("message %d (%s): tshark reads %q, want code %d flags %#x hbh %#x e2e %#x sid %q result %q, not malformed",
				i, CommandName(m.Code, m.IsRequest()), f, m.Code, m.Flags, m.HopByHop, m.EndToEnd, m.SessionID, wantRes)
		}
		// 8388608 is PI_ERROR; warnings (unknown vendor AVPs) are fine.
		if strings.Contains(f[7], "8388608") {
			t.Errorf("message %d (%s): tshark reports an error: %q", i, CommandName(m.Code, m.IsRequest()), f)
		}
	}
}

// tsharkFields wraps the messages in TCP segments to port 3868 (one stream,
// one message per segment) and returns tshark's fields, one row per
// message.
func tsharkFields(t *testing.T, msgs [][]byte, fields ...string) [][]string {
	t.Helper()
	var hexdump bytes.Buffer
	for _, b := range msgs {
		for off := 0; off < len(b); off += 16 {
			fmt.Fprintf(&hexdump, "%06x", off)
			for _, c := range b[off:min(off+16, len(b))] {
				fmt.Fprintf(&hexdump, " %02x", c)
			}
			hexdump.WriteByte('\n')
		}
	}
	dir := t.TempDir()
	in, pcap := filepath.Join(dir, "msgs.txt"), filepath.Join(dir, "msgs.pcap")
	if err := os.WriteFile(in, hexdump.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("text2pcap", "-q", "-T", "3868,3868", in, pcap).CombinedOutput(); err != nil {
		t.Fatalf("text2pcap: %v\n%s", err, out)
	}
	args := []string{"-r", pcap, "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=;"}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	out, err := exec.Command("tshark", args...).Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	rows := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(rows) != len(msgs) {
		t.Fatalf("tshark read %d packets, want %d:\n%s", len(rows), len(msgs), out)
	}
	var res [][]string
	for _, r := range rows {
		f := strings.Split(r, "\t")
		for len(f) < len(fields) {
			f = append(f, "")
		}
		res = append(res, f)
	}
	return res
}
