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

// nasSamples are initial NAS messages as UEs send them (TS 24.501 8.2.6,
// 8.2.16), hand-assembled, with the identity the proxy must read.
func nasSamples() []struct {
	name string
	nas  []byte
	want NASIdentity
} {
	guti := RegistrationRequestGUTI([3]byte{0x02, 0xf8, 0x39}, 0xca, 1016, 3, 0xdeadbeef)
	// Integrity protected (security header type 1): MAC, sequence number,
	// then the plain message.
	protected := append([]byte{0x7e, 0x01, 0x11, 0x22, 0x33, 0x44, 0x05}, guti...)
	return []struct {
		name string
		nas  []byte
		want NASIdentity
	}{
		{"registration request with 5G-GUTI", guti,
			NASIdentity{Kind: NASGUTI, PLMN: [3]byte{0x02, 0xf8, 0x39}, Region: 0xca, SetID: 1016, Pointer: 3, TMSI: 0xdeadbeef}},
		{"integrity-protected registration request with 5G-GUTI", protected,
			NASIdentity{Kind: NASGUTI, PLMN: [3]byte{0x02, 0xf8, 0x39}, Region: 0xca, SetID: 1016, Pointer: 3, TMSI: 0xdeadbeef}},
		{"service request with 5G-S-TMSI", []byte{0x7e, 0x00, 0x4c, 0x00, 0x00, 0x07, 0xf4, 0x03, 0xff, 0x00, 0x00, 0x00, 0x2a},
			NASIdentity{Kind: NASSTMSI, SetID: 15, Pointer: 63, TMSI: 42}},
		{"registration request with SUCI (null scheme)", nonEmpty(nil), NASIdentity{Kind: NASSUCI}},
		{"ciphered message", []byte{0x7e, 0x02, 0x11, 0x22, 0x33, 0x44, 0x05, 0x9a, 0x01, 0x77}, NASIdentity{Kind: NASCiphered}},
		{"ciphered with new context", []byte{0x7e, 0x04, 0x11, 0x22, 0x33, 0x44, 0x05, 0x9a}, NASIdentity{Kind: NASCiphered}},
		{"deregistration request reads no identity", []byte{0x7e, 0x00, 0x45, 0x01, 0x00, 0x0b, 0xf2}, NASIdentity{Kind: NASNoIdentity}},
		{"IMEI identity", []byte{0x7e, 0x00, 0x41, 0x01, 0x00, 0x01, 0x03}, NASIdentity{Kind: NASNoIdentity}},
		{"5GSM instead of 5GMM", []byte{0x2e, 0x01, 0x01, 0xc1}, NASIdentity{Kind: NASMalformed}},
		{"empty", nil, NASIdentity{Kind: NASMalformed}},
		{"GUTI truncated", guti[:len(guti)-1], NASIdentity{Kind: NASMalformed}},
		{"GUTI of wrong length", append(append([]byte{}, guti[:5]...), append([]byte{0x0a}, guti[6:len(guti)-1]...)...), NASIdentity{Kind: NASMalformed}},
		{"identity length beyond the message", []byte{0x7e, 0x00, 0x41, 0x01, 0xff, 0xff, 0xf2}, NASIdentity{Kind: NASMalformed}},
		{"unknown security header type", []byte{0x7e, 0x0f, 0x41, 0x01}, NASIdentity{Kind: NASMalformed}},
		{"protected message with ciphered inner header", append([]byte{0x7e, 0x01, 1, 2, 3, 4, 5}, 0x7e, 0x02, 0x41), NASIdentity{Kind: NASMalformed}},
	}
}

func TestReadNASIdentity(t *testing.T) {
	for _, tc := range nasSamples() {
		t.Run(tc.name, func(t *testing.T) {
			if got := ReadNASIdentity(tc.nas); got != tc.want {
				t.Errorf("ReadNASIdentity = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestInitialUEMessageCarriesNASIdentity: both key paths read the NAS
// identity of an Initial UE Message, and only of that message.
func TestInitialUEMessageCarriesNASIdentity(t *testing.T) {
	must := mustFn(t)
	for _, tc := range nasSamples() {
		if len(tc.nas) == 0 {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			b := must(InitialUEMessage(InitialUE{RANUEID: 5, NAS: tc.nas, Location: testLoc}))
			fast, err := peek(b)
			if err != nil {
				t.Fatal(err)
			}
			full, _, err := Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			if fast != full || fast.NAS != tc.want {
				t.Errorf("fast %+v\nfull %+v\nwant NAS %+v", fast.NAS, full.NAS, tc.want)
			}
		})
	}
	k, err := peek(must(UplinkNASTransport(1, 5, RegistrationRequestGUTI(testPLMN, 1, 2, 3, 4), testLoc)))
	if err != nil || k.NAS.Kind != NASAbsent {
		t.Errorf("uplink NAS transport key NAS = %+v (%v), want absent", k.NAS, err)
	}
}

// TestNASIdentityMatchesTshark holds the NAS reader to Wireshark's NAS-5GS
// dissector on the GUTI and S-TMSI samples carried in Initial UE Messages.
func TestNASIdentityMatchesTshark(t *testing.T) {
	for _, tool := range []string{"text2pcap", "tshark"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	must := mustFn(t)
	var hexdump bytes.Buffer
	var want []NASIdentity
	for _, tc := range nasSamples() {
		if tc.want.Kind != NASGUTI && tc.want.Kind != NASSTMSI {
			continue
		}
		want = append(want, tc.want)
		b := must(InitialUEMessage(InitialUE{RANUEID: 5, NAS: tc.nas, Location: testLoc}))
		for off := 0; off < len(b); off += 16 {
			fmt.Fprintf(&hexdump, "%06x", off)
			for _, c := range b[off:min(off+16, len(b))] {
				fmt.Fprintf(&hexdump, " %02x", c)
			}
			hexdump.WriteByte('\n')
		}
	}
	dir := t.TempDir()
	in, pcap := filepath.Join(dir, "nas.txt"), filepath.Join(dir, "nas.pcap")
	if err := os.WriteFile(in, hexdump.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("text2pcap", "-q", "-S", "38412,38412,60", in, pcap).CombinedOutput(); err != nil {
		t.Fatalf("text2pcap: %v\n%s", err, out)
	}
	out, err := exec.Command("tshark", "-r", pcap, "-T", "fields", "-E", "occurrence=l",
		"-e", "nas_5gs.amf_set_id", "-e", "nas_5gs.amf_pointer", "-e", "nas_5gs.5g_tmsi", "-e", "_ws.malformed").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) != len(want) {
		t.Fatalf("tshark read %d packets, want %d:\n%s", len(lines), len(want), out)
	}
	for i, w := range want {
		got := strings.Split(lines[i], "\t")
		exp := []string{fmt.Sprint(w.SetID), fmt.Sprint(w.Pointer), fmt.Sprint(w.TMSI), ""}
		if strings.Join(got, "|") != strings.Join(exp, "|") {
			t.Errorf("packet %d: tshark set|pointer|tmsi|malformed = %q, want %q", i, strings.Join(got, "|"), strings.Join(exp, "|"))
		}
	}
}

func FuzzReadNASIdentity(f *testing.F) {
	for _, tc := range nasSamples() {
		f.Add(tc.nas)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		id := ReadNASIdentity(b)
		if id.Kind == NASAbsent {
			t.Fatal("a read NAS-PDU is never absent")
		}
		if id.Kind != NASGUTI && id.Kind != NASSTMSI && (id.SetID != 0 || id.Pointer != 0 || id.TMSI != 0) {
			t.Fatalf("%s carries identity fields %+v", id.Kind, id)
		}
		if id.SetID > 1023 || id.Pointer > 63 {
			t.Fatalf("identity out of range: %+v", id)
		}
	})
}
