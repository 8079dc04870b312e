package bpf

import (
	"bytes"
	"crypto/rand"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// The committed object must load (pass the verifier) with room to spare:
// a program near the 1M processed-instruction limit breaks on the next
// kernel whose verifier prunes a little differently.
func TestProgramsPassVerifierWithHeadroom(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/bpf", &st); err != nil || st.Type != unix.BPF_FS_MAGIC {
		t.Skip("bpffs not mounted at /sys/fs/bpf")
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	pin := "/sys/fs/bpf/telcolb-bpftest-" + hex.EncodeToString(b)
	if err := os.MkdirAll(pin, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(pin) })

	spec, err := LoadLb()
	if err != nil {
		t.Fatal(err)
	}
	var objs LbObjects
	opts := &ebpf.CollectionOptions{
		Maps:     ebpf.MapOptions{PinPath: pin},
		Programs: ebpf.ProgramOptions{LogLevel: ebpf.LogLevelStats},
	}
	if err := spec.LoadAndAssign(&objs, opts); err != nil {
		t.Fatalf("load: %+v", err)
	}
	defer objs.Close()
	for name, p := range map[string]*ebpf.Program{"tc_ingress": objs.TcIngress, "tc_pass": objs.TcPass, "xdp_ingress": objs.XdpIngress, "xdp_pass": objs.XdpPass} {
		log := p.VerifierLog
		i := strings.Index(log, "processed ")
		if i < 0 {
			t.Fatalf("%s: no verifier stats in log %q", name, log)
		}
		var n int
		if _, err := fmt.Sscanf(log[i:], "processed %d insns", &n); err != nil {
			t.Fatalf("%s: parse stats %q: %v", name, log[i:], err)
		}
		t.Logf("%s: %d instructions processed", name, n)
		if n > 500000 {
			t.Fatalf("%s: verifier processed %d instructions, want < 500000", name, n)
		}
	}
}

// mh_compact computes the CRC32c of rebuilt SCTP packets from the table in
// lb.c: one wrong entry would only corrupt packets containing the byte that
// selects it, which the byte-exact tests may never send.
func TestCRC32cTableIsCastagnoli(t *testing.T) {
	f, err := elf.NewFile(bytes.NewReader(_LbBytes))
	if err != nil {
		t.Fatal(err)
	}
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	want := crc32.MakeTable(crc32.Castagnoli)
	for _, s := range syms {
		if s.Name != "crc32c_tab" {
			continue
		}
		sec := f.Sections[s.Section]
		data, err := sec.Data()
		if err != nil {
			t.Fatal(err)
		}
		if s.Size != 4*256 || s.Value+s.Size > uint64(len(data)) {
			t.Fatalf("crc32c_tab: %d bytes at %d in %s (%d bytes)", s.Size, s.Value, sec.Name, len(data))
		}
		for i := range want {
			if got := binary.LittleEndian.Uint32(data[s.Value+4*uint64(i):]); got != want[i] {
				t.Errorf("crc32c_tab[%d] = %#08x, want %#08x", i, got, want[i])
			}
		}
		return
	}
	t.Fatal("no crc32c_tab symbol in the object")
}
