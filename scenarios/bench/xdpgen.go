package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// XDPGen feeds a veth the way a NIC driver feeds XDP: it runs a tiny XDP
// program with BPF_PROG_TEST_RUN in live-frames mode
// (BPF_F_TEST_XDP_LIVE_FRAMES, Linux 5.18+), which XDP_REDIRECTs each frame
// into the sender's veth. The frame crosses to the veth's peer as an
// xdp_frame, so native XDP there runs on it without the skb-to-xdp_buff
// copy a socket-fed veth costs, and a receiver without XDP gets an skb
// built around the frame (no copy either). Flood's datagrams, by contrast,
// reach the peer as skbs.
//
// Like Flood, everything the frame causes (the peer's NAPI poll, the lb,
// the bridge, the backend's drop) runs in softirq on the sending CPU, in
// the sending thread's context when bottom halves are re-enabled after each
// batch, or in that CPU's ksoftirqd.
//
// The peer must have NAPI (GRO on, or an XDP program), else veth drops the
// frames (veth_xdp_xmit).
type XDPGen struct {
	prog  *ebpf.Program
	count *ebpf.Map // key 0: frames the program has sent
	frame []byte
}

// XDPGenConfig is a FloodConfig (Src, Dst, DstPort, SrcPortBase, Flows,
// Payload) plus the Ethernet addresses and the interface to send out of
// (its index in the sender's network namespace).
type XDPGenConfig struct {
	FloodConfig
	SrcMAC, DstMAC net.HardwareAddr
	Ifindex        int
}

// UDP over IPv4 in an untagged Ethernet frame: where the generator writes.
const (
	genSportOff = 14 + 20     // UDP source port
	genCheckOff = 14 + 20 + 6 // UDP checksum
	genHdrLen   = 14 + 20 + 8
)

// NewXDPGen loads the generator's program. Its frames are cfg's datagrams,
// source port SrcPortBase + n%Flows for the n-th frame, each with a valid
// UDP checksum (computed by the program from the fixed part's sum).
func NewXDPGen(cfg XDPGenConfig) (*XDPGen, error) {
	cfg.Packets = 1 // not used: Send takes the count
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	if len(cfg.SrcMAC) != 6 || len(cfg.DstMAC) != 6 {
		return nil, fmt.Errorf("bench: xdpgen: MACs %v -> %v, want Ethernet addresses", cfg.SrcMAC, cfg.DstMAC)
	}
	if cfg.Ifindex <= 0 {
		return nil, fmt.Errorf("bench: xdpgen: ifindex %d", cfg.Ifindex)
	}
	// The datagram with source port 0 and checksum 0: the checksum of
	// port p is then ^(sum + p), folded.
	udp := UDPDatagram(cfg.Src, cfg.Dst, 0, cfg.DstPort, make([]byte, cfg.Payload))
	binary.BigEndian.PutUint16(udp[6:], 0)
	sum := fold(udpSum(cfg.Src, cfg.Dst, udp))
	frame := make([]byte, 0, genHdrLen+cfg.Payload)
	frame = append(frame, cfg.DstMAC...)
	frame = append(frame, cfg.SrcMAC...)
	frame = binary.BigEndian.AppendUint16(frame, unix.ETH_P_IP)
	ip := make([]byte, 20)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
	binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
	ip[8] = 64
	ip[9] = unix.IPPROTO_UDP
	s, d := cfg.Src.As4(), cfg.Dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	binary.BigEndian.PutUint16(ip[10:], ^fold(onesAdd(0, ip)))
	frame = append(append(frame, ip...), udp...)

	count, err := ebpf.NewMap(&ebpf.MapSpec{Name: "xdpgen_count", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		return nil, fmt.Errorf("bench: xdpgen: counter map: %w", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "xdpgen", Type: ebpf.XDP, License: "GPL",
		Instructions: genProgram(count.FD(), cfg.Ifindex, cfg.Flows, cfg.SrcPortBase, sum, frame[:genHdrLen]),
	})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("bench: xdpgen: load program: %w", err), count.Close())
	}
	return &XDPGen{prog: prog, count: count, frame: frame}, nil
}

// genProgram: n := count[0]++; write the headers (hdr), port base +
// n%flows and its checksum; bpf_redirect(ifindex). A frame too short
// (never: the frame is ours) is dropped.
//
// All the headers are written again on every run because live-frames mode
// initialises a page only when the page pool allocates it: a recycled one
// keeps what the path wrote into it, and a receiver that builds an skb
// around the frame and forwards it (new MACs, TTL) gives it back modified.
func genProgram(countFD, ifindex, flows int, base, sum uint16, hdr []byte) asm.Instructions {
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R7, asm.R6, 0, asm.Word), // data
		asm.LoadMem(asm.R8, asm.R6, 4, asm.Word), // data_end
		asm.Mov.Reg(asm.R2, asm.R7),
		asm.Add.Imm(asm.R2, genHdrLen),
		asm.JGT.Reg(asm.R2, asm.R8, "drop"),
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, countFD),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "drop"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Mov.Reg(asm.R2, asm.R1),
		asm.Add.Imm(asm.R2, 1),
		asm.StoreMem(asm.R0, 0, asm.R2, asm.DWord),
		asm.Mod.Imm(asm.R1, int32(flows)),
		asm.Add.Imm(asm.R1, int32(base)), // the port
	}
	// Bytes 0..39 as words (the port is written after); 40..41 are the
	// checksum, written after.
	for off := 0; off+4 <= genCheckOff; off += 4 {
		insns = append(insns, asm.StoreImm(asm.R7, int16(off), int64(int32(binary.NativeEndian.Uint32(hdr[off:]))), asm.Word))
	}
	return append(insns,
		// checksum = ^fold(sum + port), 0 sent as 0xffff
		asm.Mov.Reg(asm.R2, asm.R1),
		asm.Add.Imm(asm.R2, int32(sum)),
		asm.Mov.Reg(asm.R3, asm.R2),
		asm.RSh.Imm(asm.R3, 16),
		asm.And.Imm(asm.R2, 0xffff),
		asm.Add.Reg(asm.R2, asm.R3),
		asm.Mov.Reg(asm.R3, asm.R2),
		asm.RSh.Imm(asm.R3, 16),
		asm.And.Imm(asm.R2, 0xffff),
		asm.Add.Reg(asm.R2, asm.R3),
		asm.Xor.Imm(asm.R2, 0xffff),
		asm.JNE.Imm(asm.R2, 0, "store"),
		asm.Mov.Imm(asm.R2, 0xffff),
		asm.HostTo(asm.BE, asm.R1, asm.Half).WithSymbol("store"),
		asm.HostTo(asm.BE, asm.R2, asm.Half),
		asm.StoreMem(asm.R7, genSportOff, asm.R1, asm.Half),
		asm.StoreMem(asm.R7, genCheckOff, asm.R2, asm.Half),
		asm.Mov.Imm(asm.R1, int32(ifindex)),
		asm.Mov.Imm(asm.R2, 0),
		asm.FnRedirect.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 1).WithSymbol("drop"), // XDP_DROP
		asm.Return(),
	)
}

// Send sends packets frames (in the kernel's batches of 64) and returns
// how many the program sent and the calling thread's CPU time meanwhile.
// It must run on a locked OS thread in the sender's network namespace
// (lab.Host.Do): bpf_redirect resolves the ifindex there.
func (g *XDPGen) Send(packets int) (FloodResult, error) {
	if packets < 1 {
		return FloodResult{}, fmt.Errorf("bench: xdpgen: packets=%d, want > 0", packets)
	}
	n0, err := g.sent()
	if err != nil {
		return FloodResult{}, err
	}
	start, err := ThreadCPU()
	if err != nil {
		return FloodResult{}, err
	}
	// A signal makes the kernel stop with EINTR and cilium/ebpf run the
	// whole count again; the counter says what was really sent.
	_, err = g.prog.Run(&ebpf.RunOptions{Data: g.frame, Repeat: uint32(packets), Flags: unix.BPF_F_TEST_XDP_LIVE_FRAMES})
	end, cerr := ThreadCPU()
	n1, nerr := g.sent()
	if err = errors.Join(err, cerr, nerr); err != nil {
		return FloodResult{}, fmt.Errorf("bench: xdpgen: run: %w", err)
	}
	return FloodResult{Sent: int(n1 - n0), ThreadCPU: end - start}, nil
}

func (g *XDPGen) sent() (uint64, error) {
	var n uint64
	if err := g.count.Lookup(uint32(0), &n); err != nil {
		return 0, fmt.Errorf("bench: xdpgen: counter: %w", err)
	}
	return n, nil
}

// Close unloads the program.
func (g *XDPGen) Close() error {
	return errors.Join(g.prog.Close(), g.count.Close())
}
