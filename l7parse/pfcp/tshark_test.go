package pfcp

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestMessagesDecodeInTshark checks, against an independent decoder, the
// messages the proxy builds (rejections, node-level procedures) and the
// ones it rewrites: each is wrapped in UDP port 8805 by text2pcap and read
// back by tshark, which must agree on type, SEID and sequence number and
// flag nothing as malformed.
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
	for _, s := range samples(t) {
		msgs = append(msgs, s.b)
	}
	node := NodeIDFromAddr(ip("10.9.9.9"))
	est, _ := Parse(samples(t)[3].b)
	for _, build := range []func() ([]byte, error){
		func() ([]byte, error) { return Node(HeartbeatRequest, 1, "", 0, ToNTP(recTS), 0) },
		func() ([]byte, error) { return Node(HeartbeatResponse, 1, "", 0, ToNTP(recTS), 0) },
		func() ([]byte, error) { return Node(AssociationSetupRequest, 2, node, 0, ToNTP(recTS), 0) },
		func() ([]byte, error) {
			return Node(AssociationSetupResponse, 2, node, CauseAccepted, ToNTP(recTS), 0, rawIE(IEUPFunctionFeature, []byte{1, 0}))
		},
		func() ([]byte, error) { return Node(AssociationReleaseResponse, 3, node, CauseAccepted, 0, 0) },
		func() ([]byte, error) { return Reject(est, 0, node, CauseMandatoryIEMissing, IEFSEID) },
		func() ([]byte, error) {
			return Reject(Msg{Type: SessionModificationReq, Seq: 9}, 0, node, CauseSessionNotFound, 0)
		},
		func() ([]byte, error) { return Session(SessionDeletionReq, 0x55, 4, "", 0, 0) },
		func() ([]byte, error) {
			b := append([]byte(nil), samples(t)[3].b...)
			b, err := ReplaceIE(b, est.FSEIDSpan, FSEIDIE(0xabc, ip("2001:db8::5")))
			SetSeq(b, 77)
			return b, err
		},
		func() ([]byte, error) { return VersionNotSupportedResponse(5), nil },
	} {
		b, err := build()
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, b)
	}
	lines := tsharkFields(t, msgs, "pfcp.msg_type", "pfcp.seid", "pfcp.seqno", "_ws.malformed", "_ws.expert.severity", "_ws.expert.message")
	for i, b := range msgs {
		m, err := Parse(b)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		f := lines[i]
		wantSEID := ""
		if m.HasSEID {
			wantSEID = fmt.Sprintf("0x%016x", m.SEID)
		}
		// pfcp.seid also names F-SEID values: the header's comes first.
		if f[0] != strconv.Itoa(int(m.Type)) || strings.Split(f[1], ";")[0] != wantSEID || f[2] != strconv.Itoa(int(m.Seq)) || f[3] != "" {
			t.Errorf("message %d (%s): tshark reads %q, want type %d seid %q seq %d, not malformed", i, TypeName(m.Type), f, m.Type, wantSEID, m.Seq)
		}
		// tshark has no dissector for enterprise IEs and says so as an
		// error: the only one tolerated.
		if strings.Contains(f[4], "8388608") && !strings.Contains(f[5], "No vendor dissector") { // PI_ERROR
			t.Errorf("message %d (%s): tshark reports an error: %q", i, TypeName(m.Type), f)
		}
	}
}

// tsharkFields wraps each message in UDP 8805 and returns tshark's fields,
// one row per message.
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
	if out, err := exec.Command("text2pcap", "-q", "-u", "8805,8805", in, pcap).CombinedOutput(); err != nil {
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
