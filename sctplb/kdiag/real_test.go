package kdiag

import (
	"bufio"
	"encoding/hex"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
)

// realDump is a reply of Linux 6.1's sctp_diag captured in the VM lab
// (testdata/linux-6.1-loopback-dump.hex says how), one datagram per line.
func realDump(t testing.TB) [][]byte {
	t.Helper()
	f, err := os.Open("testdata/linux-6.1-loopback-dump.hex")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		b, err := hex.DecodeString(line)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// The kernel's own answer: its two socket records (no peers) skipped, the
// two associations read with the ports, inodes and tags the kernel listed
// in /proc/net/sctp/assocs and the kernel transport used in the same run,
// each end's tag the other's peer tag.
func TestParseRealLinux61Reply(t *testing.T) {
	dgrams := realDump(t)
	if len(dgrams) != 2 {
		t.Fatalf("%d datagrams in the test data, want 2", len(dgrams))
	}
	r, err := ParseReply(dgrams[0], 1)
	if err != nil {
		t.Fatal(err)
	}
	if r.Done || len(r.Assocs) != 2 {
		t.Fatalf("first datagram: %+v, want 2 associations, not done", r)
	}
	lo := []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	want := []Assoc{
		{Family: syscall.AF_INET, State: StateEstablished, LocalPort: 52741, PeerPort: 38412, Locals: lo, Peers: lo,
			Tag: 0xd0277fe6, PeerTag: 0xf0f7b3a2, Inode: 9946},
		{Family: syscall.AF_INET, State: StateEstablished, LocalPort: 38412, PeerPort: 52741, Locals: lo, Peers: lo,
			Tag: 0xf0f7b3a2, PeerTag: 0xd0277fe6, Inode: 9947},
	}
	for i, a := range r.Assocs {
		if !equal(a, want[i]) {
			t.Errorf("association %d: %+v, want %+v", i, a, want[i])
		}
	}
	done, err := ParseReply(dgrams[1], 1)
	if err != nil || !done.Done || len(done.Assocs) != 0 {
		t.Errorf("second datagram: %+v %v, want DONE", done, err)
	}
	// Cut anywhere inside, the first datagram is refused, never misread.
	for n := 1; n < len(dgrams[0]); n++ {
		if r, err := ParseReply(dgrams[0][:n], 1); err == nil && len(r.Assocs) == 2 {
			t.Fatalf("cut at %d of %d bytes: read both associations", n, len(dgrams[0]))
		}
	}
}
