package ngap

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBuiltPDUsDecodeInTshark checks our encoder against an independent NGAP
// decoder: each PDU is wrapped in SCTP (port 38412, PPID 60) by text2pcap and
// read back by tshark.
func TestBuiltPDUsDecodeInTshark(t *testing.T) {
	for _, tool := range []string{"text2pcap", "tshark"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	samples := samplePDUs(t)
	var hexdump bytes.Buffer
	for _, s := range samples {
		// text2pcap's hexdump input: an offset then bytes, one packet per
		// block starting at offset 0.
		for off := 0; off < len(s.pdu); off += 16 {
			end := min(off+16, len(s.pdu))
			fmt.Fprintf(&hexdump, "%06x", off)
			for _, c := range s.pdu[off:end] {
				fmt.Fprintf(&hexdump, " %02x", c)
			}
			hexdump.WriteByte('\n')
		}
	}
	dir := t.TempDir()
	in, pcap := filepath.Join(dir, "pdus.txt"), filepath.Join(dir, "pdus.pcap")
	if err := os.WriteFile(in, hexdump.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("text2pcap", "-q", "-S", "38412,38412,60", in, pcap).CombinedOutput(); err != nil {
		t.Fatalf("text2pcap: %v\n%s", err, out)
	}
	out, err := exec.Command("tshark", "-r", pcap, "-T", "fields",
		"-e", "ngap.procedureCode", "-e", "ngap.RAN_UE_NGAP_ID", "-e", "ngap.AMF_UE_NGAP_ID", "-e", "_ws.malformed").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) != len(samples) {
		t.Fatalf("tshark read %d packets, want %d:\n%s", len(lines), len(samples), out)
	}
	for i, s := range samples {
		t.Run(s.name, func(t *testing.T) {
			f := strings.Split(lines[i], "\t")
			for len(f) < 4 {
				f = append(f, "")
			}
			if want := fmt.Sprint(s.want.Procedure); f[0] != want {
				t.Errorf("tshark procedureCode = %q, want %s", f[0], want)
			}
			wantRAN := ""
			if s.want.HasRANUEID {
				wantRAN = fmt.Sprint(s.want.RANUEID)
			}
			if f[1] != wantRAN {
				t.Errorf("tshark RAN_UE_NGAP_ID = %q, want %q", f[1], wantRAN)
			}
			wantAMF := ""
			switch {
			case s.want.HasAMFUEID:
				wantAMF = fmt.Sprint(s.want.AMFUEID)
			case s.want.HasSourceAMFUEID:
				// tshark files Source-AMF-UE-NGAP-ID under the same field.
				wantAMF = fmt.Sprint(s.want.SourceAMFUEID)
			case s.want.Procedure == 20 && s.want.Type == Initiating:
				wantAMF = "3" // the partial reset's connection item
			}
			if f[2] != wantAMF {
				t.Errorf("tshark AMF_UE_NGAP_ID = %q, want %q", f[2], wantAMF)
			}
			if f[3] != "" {
				t.Errorf("tshark flags the PDU as malformed")
			}
		})
	}
}
