package capture

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/scenarios/lab"
)

// ngSetupResponse is an NGAP NGSetupResponse (procedure code 21), from
// free5gc/ngap's tests.
const ngSetupResponse = "20150039000004000100060180616d663100600017004002f839cafe00060031302e3130302e3230302e313900" +
	"564001ff005000080002f83900000008"

func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
}

// sctpPcap wraps payload in Ethernet/IPv4/SCTP DATA with text2pcap (which
// computes the CRC32c) and returns the pcap path.
func sctpPcap(t *testing.T, payload string, ppid int) string {
	t.Helper()
	requireTools(t, "text2pcap", "tshark")
	dir := t.TempDir()
	var dump strings.Builder
	b, err := hex.DecodeString(payload)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(b); i += 16 {
		end := min(i+16, len(b))
		fmt.Fprintf(&dump, "%06x  % x\n", i, b[i:end])
	}
	in := filepath.Join(dir, "in.txt")
	if err := os.WriteFile(in, []byte(dump.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.pcap")
	cmd := exec.Command("text2pcap", "-F", "pcap", "-S", fmt.Sprintf("38412,38412,%d", ppid), in, out)
	if o, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("text2pcap: %v: %s", err, o)
	}
	return out
}

func TestNGAPDecodesProcedureAndStream(t *testing.T) {
	file := sctpPcap(t, ngSetupResponse, 60)
	msgs, err := NGAP(context.Background(), file)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || msgs[0].ProcedureCode != 21 || msgs[0].RANUENGAPID != -1 {
		t.Fatalf("NGAP() = %+v, want one NGSetup (21) message without UE IDs", msgs)
	}
	pkts, err := SCTP(context.Background(), file)
	if err != nil {
		t.Fatal(err)
	}
	if len(pkts) != 1 || !reflect.DeepEqual(pkts[0].Chunks, []string{"DATA"}) || !reflect.DeepEqual(pkts[0].PPIDs, []uint32{60}) {
		t.Fatalf("SCTP() = %+v, want one DATA chunk with PPID 60", pkts)
	}
	if pkts[0].SrcPort != 38412 || pkts[0].DstPort != 38412 {
		t.Errorf("ports %d->%d, want 38412", pkts[0].SrcPort, pkts[0].DstPort)
	}
}

func TestChecksumsFlagCorruptedSCTP(t *testing.T) {
	good := sctpPcap(t, ngSetupResponse, 60)
	rep, err := Checksums(context.Background(), good)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Bad) != 0 || rep.Good < 2 { // IPv4 header + SCTP CRC32c
		t.Fatalf("intact packet: %+v, want no bad and both checksums verified", rep)
	}
	raw, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	// pcap header 24 + record header 16 + Ethernet 14 + IPv4 20 + SCTP checksum offset 8.
	const crcOff = 24 + 16 + 14 + 20 + 8
	raw[crcOff] ^= 0xff
	bad := filepath.Join(t.TempDir(), "bad.pcap")
	if err := os.WriteFile(bad, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	frames, err := BadChecksums(context.Background(), bad)
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) != 1 || frames[0].Number != 1 || !strings.Contains(frames[0].Protocol, "sctp") {
		t.Fatalf("BadChecksums = %+v, want frame 1 (sctp)", frames)
	}
}

func TestCaptureInNamespaceSeesTraffic(t *testing.T) {
	requireTools(t, "dumpcap", "tshark")
	l := lab.New(t, lab.Config{NoBackends: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := Start(ctx, l.LB, "eth0", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := l.Client.Ping(ctx, netip.MustParseAddr("10.77.1.1"), netip.Addr{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	rows, err := Fields(ctx, c.File, "icmp.type == 8", "ip.src", "ip.dst")
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 {
		t.Fatalf("echo requests captured: %v, want 3", rows)
	}
	if rows[0][0] != "10.77.1.2" || rows[0][1] != "10.77.1.1" {
		t.Errorf("row %v, want 10.77.1.2 -> 10.77.1.1", rows[0])
	}
	rep, err := Checksums(ctx, c.File)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Bad) != 0 || rep.Good == 0 {
		t.Errorf("checksums: %+v, want all verified good", rep)
	}
}

func TestParseFields(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		n       int
		want    [][]string
		wantErr bool
	}{
		{"two rows", "1\ta\n2\tb\n", 2, [][]string{{"1", "a"}, {"2", "b"}}, false},
		{"empty columns kept", "1\t\n", 2, [][]string{{"1", ""}}, false},
		{"blank lines skipped", "\n1\tx\n\n", 2, [][]string{{"1", "x"}}, false},
		{"no output", "", 3, nil, false},
		{"column count mismatch", "1\t2\t3\n", 2, nil, true},
		{"zero columns", "x", 0, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseFields(tc.out, tc.n)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if !tc.wantErr && !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParseSCTPRows(t *testing.T) {
	rows := [][]string{
		{"1", "10.77.1.2", "10.77.2.11", "", "", "5000", "3868", "0x00000000", "1", ""},
		{"2", "", "", "fd77:2::11", "fd77:1::2", "3868", "5000", "0x1234abcd", "0,3", "46"},
	}
	got, err := parseSCTPRows(rows)
	if err != nil {
		t.Fatal(err)
	}
	want := []SCTPPacket{
		{Frame: 1, Src: "10.77.1.2", Dst: "10.77.2.11", SrcPort: 5000, DstPort: 3868, Chunks: []string{"INIT"}},
		{Frame: 2, Src: "fd77:2::11", Dst: "fd77:1::2", SrcPort: 3868, DstPort: 5000, VTag: 0x1234abcd,
			Chunks: []string{"DATA", "SACK"}, PPIDs: []uint32{46}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	for _, bad := range [][]string{
		{"x", "", "", "", "", "1", "2", "0x0", "", ""},
		{"1", "", "", "", "", "port", "2", "0x0", "", ""},
		{"1", "", "", "", "", "1", "2", "zz", "", ""},
		{"1", "", "", "", "", "1", "2", "0x0", "DATA", ""},
		{"1", "", "", "", "", "1", "2", "0x0", "0", "-1"},
		{"1", "2"},
	} {
		if _, err := parseSCTPRows([][]string{bad}); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestParseNGAPRowsSplitsBundledPDUs(t *testing.T) {
	got, err := parseNGAPRows([][]string{{"7", "10.0.0.1", "10.0.0.2", "1,1", "15,46", "9,10", ""}})
	if err != nil {
		t.Fatal(err)
	}
	want := []NGAPMessage{
		{Frame: 7, Src: "10.0.0.1", Dst: "10.0.0.2", Stream: 1, ProcedureCode: 15, RANUENGAPID: 9, AMFUENGAPID: -1},
		{Frame: 7, Src: "10.0.0.1", Dst: "10.0.0.2", Stream: 1, ProcedureCode: 46, RANUENGAPID: 10, AMFUENGAPID: -1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if _, err := parseNGAPRows([][]string{{"7", "", "", "", "x", "", ""}}); err == nil {
		t.Error("accepted a non-numeric procedure code")
	}
}

func TestChunkNames(t *testing.T) {
	for typ, want := range map[int]string{0: "DATA", 1: "INIT", 10: "COOKIE_ECHO", 11: "COOKIE_ACK", 193: "ASCONF", 77: "CHUNK_77"} {
		if got := ChunkName(typ); got != want {
			t.Errorf("ChunkName(%d) = %s, want %s", typ, got, want)
		}
	}
}

func FuzzParseFields(f *testing.F) {
	f.Add("1\ta\n2\tb\n", 2)
	f.Add("\t\t\n", 3)
	f.Fuzz(func(t *testing.T, out string, n int) {
		rows, err := parseFields(out, n)
		if err != nil {
			return
		}
		for _, r := range rows {
			if len(r) != n {
				t.Fatalf("row %q has %d columns, want %d", r, len(r), n)
			}
		}
	})
}

func FuzzParseSCTPRows(f *testing.F) {
	f.Add("1\t10.0.0.1\t10.0.0.2\t\t\t1\t2\t0x0\t0,3\t60")
	f.Fuzz(func(t *testing.T, line string) {
		rows, err := parseFields(line, 10)
		if err != nil {
			return
		}
		pkts, err := parseSCTPRows(rows)
		if err == nil && len(pkts) != len(rows) {
			t.Fatalf("%d packets from %d rows", len(pkts), len(rows))
		}
	})
}

func FuzzParseNGAPRows(f *testing.F) {
	f.Add("7\t10.0.0.1\t10.0.0.2\t1,1\t15,46\t9,10\t")
	f.Fuzz(func(t *testing.T, line string) {
		rows, err := parseFields(line, 7)
		if err != nil {
			return
		}
		msgs, err := parseNGAPRows(rows)
		if err != nil {
			return
		}
		want := 0
		for _, r := range rows {
			want += len(splitList(r[4]))
		}
		if len(msgs) != want {
			t.Fatalf("%d messages from %d procedure codes", len(msgs), want)
		}
	})
}

func TestPacketSocketOn(t *testing.T) {
	const hdr = "sk               RefCnt Type Proto  Iface R Rmem   User   Inode\n"
	tests := []struct {
		name    string
		content string
		want    bool
	}{
		{"running ETH_P_ALL on 2", hdr + "0000000000000000 3      3    0003   2     1 0      0      123\n", true},
		{"other interface", hdr + "0000000000000000 3      3    0003   3     1 0      0      123\n", false},
		{"no protocol yet", hdr + "0000000000000000 3      3    0000   2     1 0      0      123\n", false},
		{"not running", hdr + "0000000000000000 3      3    0003   2     0 0      0      123\n", false},
		{"empty", hdr, false},
		{"garbage", "x\ny z\n", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := packetSocketOn(tc.content, 2); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// tcpFrame is an Ethernet/IPv6 or IPv4/TCP frame (ACK, 20-byte header)
// with the given payload and its checksum field set to sum.
func tcpFrame(v6 bool, payload []byte, sum uint16) []byte {
	src, dst := netip.MustParseAddr("fd77:1::2"), netip.MustParseAddr("fd77:100::1")
	if !v6 {
		src, dst = netip.MustParseAddr("10.77.1.2"), netip.MustParseAddr("10.77.100.1")
	}
	tcp := make([]byte, 20+len(payload))
	binary.BigEndian.PutUint16(tcp[0:], 46926)
	binary.BigEndian.PutUint16(tcp[2:], 8080)
	binary.BigEndian.PutUint32(tcp[4:], 1)
	binary.BigEndian.PutUint32(tcp[8:], 1)
	tcp[12] = 5 << 4
	tcp[13] = 0x10 // ACK
	binary.BigEndian.PutUint16(tcp[14:], 502)
	copy(tcp[20:], payload)
	binary.BigEndian.PutUint16(tcp[16:], sum)
	f := []byte{2, 0x77, 0, 0, 0, 2, 2, 0x77, 0, 0, 0, 1}
	if v6 {
		f = append(f, 0x86, 0xdd, 0x60, 0, 0, 0, byte(len(tcp)>>8), byte(len(tcp)), 6, 64)
		f = append(f, src.AsSlice()...)
		f = append(f, dst.AsSlice()...)
	} else {
		ip := []byte{0x45, 0, byte((20 + len(tcp)) >> 8), byte(20 + len(tcp)), 0, 0, 0x40, 0, 64, 6, 0, 0}
		ip = append(ip, src.AsSlice()...)
		ip = append(ip, dst.AsSlice()...)
		binary.BigEndian.PutUint16(ip[10:], ^onesSum(0, ip))
		f = append(append(f, 0x08, 0x00), ip...)
	}
	return append(f, tcp...)
}

// onesSum adds b to s in one's complement, folded to 16 bits.
func onesSum(s uint32, b []byte) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// tcpSum is the TCP checksum of frame (built by tcpFrame, field ignored).
func tcpSum(v6 bool, frame []byte) uint16 {
	var src, dst, tcp []byte
	if v6 {
		src, dst, tcp = frame[22:38], frame[38:54], append([]byte(nil), frame[54:]...)
	} else {
		src, dst, tcp = frame[26:30], frame[30:34], append([]byte(nil), frame[34:]...)
	}
	tcp[16], tcp[17] = 0, 0
	pseudo := append(append(append([]byte(nil), src...), dst...), 0, 6, byte(len(tcp)>>8), byte(len(tcp)))
	return ^onesSum(uint32(onesSum(uint32(onesSum(0, pseudo)), tcp)), nil)
}

// writePcap writes frames as a pcap file (Ethernet) and returns its path.
func writePcap(t *testing.T, frames ...[]byte) string {
	t.Helper()
	b := binary.LittleEndian.AppendUint32(nil, 0xa1b2c3d4)
	b = binary.LittleEndian.AppendUint16(b, 2)
	b = binary.LittleEndian.AppendUint16(b, 4)
	b = append(b, make([]byte, 8)...)
	b = binary.LittleEndian.AppendUint32(b, 65535)
	b = binary.LittleEndian.AppendUint32(b, 1)
	for i, f := range frames {
		b = binary.LittleEndian.AppendUint32(b, uint32(i+1))
		b = binary.LittleEndian.AppendUint32(b, 0)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(f)))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	file := filepath.Join(t.TempDir(), "tcp.pcap")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// A TCP segment whose checksum is 0x0000 may carry 0xffff (Linux's
// software checksum writes it, the same value in one's complement): good.
// Any other wrong value, 0xffff where the checksum is not 0 included, is
// bad. IPv4 and IPv6.
func TestChecksumsAcceptTCPNegativeZero(t *testing.T) {
	requireTools(t, "tshark")
	for _, v6 := range []bool{false, true} {
		// A payload whose last two bytes make the checksum 0x0000.
		payload := []byte("GET / HTTP/1.1\r\n\x00\x00")
		f := tcpFrame(v6, payload, 0)
		c := tcpSum(v6, f)
		binary.BigEndian.PutUint16(payload[len(payload)-2:], c)
		zero := tcpFrame(v6, payload, 0)
		if got := tcpSum(v6, zero); got != 0 {
			t.Fatalf("v6=%v: crafted payload gives checksum %#04x, want 0", v6, got)
		}
		other := tcpFrame(v6, []byte("GET / HTTP/1.1\r\n"), 0)
		otherSum := tcpSum(v6, other)
		if otherSum == 0 {
			t.Fatal("second frame's checksum is 0 too")
		}
		frames := [][]byte{
			zero,                          // 1: 0x0000, right
			tcpFrame(v6, payload, 0xffff), // 2: 0xffff for 0x0000: good
			tcpFrame(v6, []byte("GET / HTTP/1.1\r\n"), otherSum),   // 3: right
			tcpFrame(v6, []byte("GET / HTTP/1.1\r\n"), 0xffff),     // 4: 0xffff for another value: bad
			tcpFrame(v6, []byte("GET / HTTP/1.1\r\n"), otherSum^1), // 5: bad
			tcpFrame(v6, payload, 0x0001),                          // 6: bad
		}
		rep, err := Checksums(context.Background(), writePcap(t, frames...))
		if err != nil {
			t.Fatal(err)
		}
		var bad []int
		for _, f := range rep.Bad {
			bad = append(bad, f.Number)
		}
		if !reflect.DeepEqual(bad, []int{4, 5, 6}) {
			t.Errorf("v6=%v: bad frames %v, want [4 5 6]", v6, bad)
		}
		wantGood := 3 // TCP of frames 1-3
		if !v6 {
			wantGood += 6 // every IPv4 header
		}
		if rep.Good != wantGood {
			t.Errorf("v6=%v: %d good checksums, want %d", v6, rep.Good, wantGood)
		}
	}
}
