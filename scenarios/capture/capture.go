// Package capture records packets in lab namespaces with dumpcap and checks
// them with tshark: fields, checksum verification, SCTP chunks, NGAP.
//
// Capture per interface (dumpcap -i IF): "-i any" inside a namespace
// reports wrong interface names. On the sending side of a veth, checksums
// may still be partial (offload) unless the lab disabled offloads (the
// default topology does).
package capture

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/telcolb/telcolb/scenarios/lab"
)

// Capture is a running (or stopped) dumpcap on one interface.
type Capture struct {
	// File is the pcapng written.
	File  string
	Iface string
	Host  *lab.Host
	proc  *lab.Proc
}

// Start captures on iface of host into dir/<host>-<iface>.pcapng and returns
// once dumpcap is capturing.
func Start(ctx context.Context, host *lab.Host, iface, dir string) (*Capture, error) {
	return start(ctx, host, iface, dir)
}

// StartSnap is Start keeping only the first snaplen bytes of each frame:
// long captures of many flows (headers are what is looked at) stay small.
func StartSnap(ctx context.Context, host *lab.Host, iface, dir string, snaplen int) (*Capture, error) {
	if snaplen <= 0 {
		return nil, fmt.Errorf("capture: snaplen %d: must be positive", snaplen)
	}
	return start(ctx, host, iface, dir, "-s", strconv.Itoa(snaplen))
}

func start(ctx context.Context, host *lab.Host, iface, dir string, extra ...string) (*Capture, error) {
	if _, err := exec.LookPath("dumpcap"); err != nil {
		return nil, fmt.Errorf("capture: dumpcap (package tshark) is needed: %w", err)
	}
	if host == nil || iface == "" {
		return nil, errors.New("capture: host and interface are required")
	}
	file := filepath.Join(dir, fmt.Sprintf("%s-%s.pcapng", host.Name, iface))
	args := append([]string{"-i", iface}, extra...)
	p, err := host.Start("dumpcap", append(args, "-w", file)...)
	if err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.WaitStderr(wctx, "Capturing on"); err != nil {
		_ = p.Stop()
		return nil, fmt.Errorf("capture: dumpcap on %s/%s: %w", host.Name, iface, err)
	}
	// "Capturing on" comes before libpcap has bound its socket to the
	// protocol: wait until the kernel lists it as receiving on iface.
	if err := waitPacketSocket(wctx, host, iface); err != nil {
		_ = p.Stop()
		return nil, fmt.Errorf("capture: dumpcap on %s/%s: %w", host.Name, iface, err)
	}
	return &Capture{File: file, Iface: iface, Host: host, proc: p}, nil
}

// waitPacketSocket polls the host's /proc/net/packet until a running packet
// socket bound to a protocol on iface exists.
func waitPacketSocket(ctx context.Context, host *lab.Host, iface string) error {
	for {
		found := false
		err := host.Do(func() error {
			ifc, err := net.InterfaceByName(iface)
			if err != nil {
				return err
			}
			// thread-self: /proc/self/net would show the process's namespace.
			b, err := os.ReadFile("/proc/thread-self/net/packet")
			if err != nil {
				return err
			}
			found = packetSocketOn(string(b), ifc.Index)
			return nil
		})
		if err != nil {
			return err
		}
		if found {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no packet socket on %s: %w", iface, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// packetSocketOn reports whether /proc/net/packet content lists a running
// socket with a protocol bound on ifindex ("sk RefCnt Type Proto Iface R ...").
func packetSocketOn(content string, ifindex int) bool {
	for _, line := range strings.Split(content, "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		idx, err := strconv.Atoi(f[4])
		if err != nil || idx != ifindex {
			continue
		}
		if f[3] != "0000" && f[5] == "1" {
			return true
		}
	}
	return false
}

// Stop ends the capture and waits until the file is complete.
func (c *Capture) Stop() error {
	select {
	case <-c.proc.Done():
		return nil
	default:
	}
	// dumpcap reads the kernel's buffer every few hundred milliseconds and
	// drops what is still buffered when interrupted: let it catch up first.
	time.Sleep(flushGrace)
	// SIGINT makes dumpcap flush and close the file.
	if err := c.proc.Signal(syscall.SIGINT); err != nil {
		return fmt.Errorf("capture: stop: %w", err)
	}
	select {
	case <-c.proc.Done():
		return nil
	case <-time.After(10 * time.Second):
		_ = c.proc.Stop()
		return fmt.Errorf("capture: dumpcap on %s/%s did not stop on SIGINT", c.Host.Name, c.Iface)
	}
}

// flushGrace covers dumpcap's capture read timeout (250 ms).
const flushGrace = 600 * time.Millisecond

// tsharkPrefs make tshark verify every checksum it can.
var tsharkPrefs = []string{
	"-o", "ip.check_checksum:TRUE",
	"-o", "tcp.check_checksum:TRUE",
	"-o", "udp.check_checksum:TRUE",
	"-o", "sctp.checksum:CRC 32c",
}

// Fields runs tshark over file with a display filter and returns one row per
// matching frame, one column per field; a field with several occurrences is
// joined with ",".
func Fields(ctx context.Context, file, displayFilter string, fields ...string) ([][]string, error) {
	if len(fields) == 0 {
		return nil, errors.New("capture: no fields requested")
	}
	args := append([]string{"-r", file, "-n"}, tsharkPrefs...)
	if displayFilter != "" {
		args = append(args, "-Y", displayFilter)
	}
	args = append(args, "-T", "fields", "-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,")
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	cmd := exec.CommandContext(ctx, "tshark", args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("capture: tshark %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return parseFields(string(out), len(fields))
}

// parseFields splits tshark's tab-separated output into rows of n columns.
func parseFields(out string, n int) ([][]string, error) {
	if n <= 0 {
		return nil, fmt.Errorf("capture: %d columns", n)
	}
	var rows [][]string
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64*1024), 4<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if line == "" {
			continue
		}
		cols := strings.Split(line, "\t")
		if len(cols) != n {
			return nil, fmt.Errorf("capture: tshark row has %d columns, want %d: %q", len(cols), n, line)
		}
		rows = append(rows, cols)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("capture: reading tshark output: %w", err)
	}
	return rows, nil
}

// Frame identifies a packet in a capture.
type Frame struct {
	Number   int
	Protocol string // protocols of the frame, "eth:ethertype:ip:sctp"
	Info     string
}

// ChecksumReport is the outcome of verifying every IPv4, TCP, UDP, SCTP,
// ICMP and ICMPv6 checksum of a capture.
type ChecksumReport struct {
	// Good counts checksums tshark verified as correct (per field occurrence).
	Good int
	// Bad lists frames with at least one wrong checksum.
	Bad []Frame
}

// Checksums verifies IPv4, TCP, UDP, SCTP (CRC32c), ICMP and ICMPv6
// checksums, those of headers embedded in ICMP errors included.
//
// A TCP checksum field of 0xffff where the computed checksum is 0x0000 is
// counted good: it is the same value in one's complement (every receiver
// accepts it), and Linux writes it whenever it finishes a checksum in
// software that comes out 0 (skb_checksum_help stores CSUM_MANGLED_0,
// 0xffff, for TCP as for UDP), so about one TCP segment in 65,536 sent
// through a device without checksum offload carries it. tshark flags it bad
// (its RFC 1624 check, "should be 0x0000").
func Checksums(ctx context.Context, file string) (ChecksumReport, error) {
	rows, err := Fields(ctx, file, "", "frame.number", "frame.protocols",
		"ip.checksum.status", "tcp.checksum.status", "udp.checksum.status", "sctp.checksum.status",
		"icmp.checksum.status", "icmpv6.checksum.status", "tcp.checksum", "tcp.checksum_calculated")
	if err != nil {
		return ChecksumReport{}, err
	}
	const tcpStatus, tcpField, tcpCalc = 3, 8, 9
	var rep ChecksumReport
	for _, r := range rows {
		bad := false
		// tshark leaves out a verified checksum's computed value: the
		// exception applies only where each TCP header has all three.
		fields, calcs := strings.Split(r[tcpField], ","), strings.Split(r[tcpCalc], ",")
		for col := 2; col < tcpField; col++ {
			vals := strings.Split(r[col], ",")
			aligned := len(vals) == len(fields) && len(vals) == len(calcs)
			for i, v := range vals {
				switch strings.TrimSpace(v) {
				case "1", "Good":
					rep.Good++
				case "0", "Bad":
					if col == tcpStatus && aligned &&
						strings.TrimSpace(fields[i]) == "0xffff" && strings.TrimSpace(calcs[i]) == "0x0000" {
						rep.Good++
						continue
					}
					bad = true
				}
			}
		}
		if bad {
			n, _ := strconv.Atoi(r[0])
			rep.Bad = append(rep.Bad, Frame{Number: n, Protocol: r[1]})
		}
	}
	return rep, nil
}

// BadChecksums returns the frames with a wrong checksum (see Checksums).
func BadChecksums(ctx context.Context, file string) ([]Frame, error) {
	rep, err := Checksums(ctx, file)
	return rep.Bad, err
}

// SCTP chunk types (RFC 9260 and extensions).
var chunkNames = map[int]string{
	0: "DATA", 1: "INIT", 2: "INIT_ACK", 3: "SACK", 4: "HEARTBEAT", 5: "HEARTBEAT_ACK",
	6: "ABORT", 7: "SHUTDOWN", 8: "SHUTDOWN_ACK", 9: "ERROR", 10: "COOKIE_ECHO",
	11: "COOKIE_ACK", 12: "ECNE", 13: "CWR", 14: "SHUTDOWN_COMPLETE", 15: "AUTH",
	64: "I_DATA", 128: "ASCONF_ACK", 130: "RE_CONFIG", 132: "PAD", 192: "FORWARD_TSN",
	193: "ASCONF", 194: "I_FORWARD_TSN",
}

// ChunkName returns the name of an SCTP chunk type ("DATA", "INIT"...).
func ChunkName(t int) string {
	if n, ok := chunkNames[t]; ok {
		return n
	}
	return fmt.Sprintf("CHUNK_%d", t)
}

// SCTPPacket is one SCTP packet of a capture.
type SCTPPacket struct {
	Frame            int
	Src, Dst         string
	SrcPort, DstPort int
	VTag             uint32
	Chunks           []string
	// PPIDs of the DATA chunks, in order.
	PPIDs []uint32
}

// SCTP decodes every SCTP packet of the capture (IPv4 and IPv6).
func SCTP(ctx context.Context, file string) ([]SCTPPacket, error) {
	rows, err := Fields(ctx, file, "sctp", "frame.number", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst",
		"sctp.srcport", "sctp.dstport", "sctp.verification_tag", "sctp.chunk_type", "sctp.data_payload_proto_id")
	if err != nil {
		return nil, err
	}
	return parseSCTPRows(rows)
}

func parseSCTPRows(rows [][]string) ([]SCTPPacket, error) {
	pkts := make([]SCTPPacket, 0, len(rows))
	for _, r := range rows {
		if len(r) != 10 {
			return nil, fmt.Errorf("capture: sctp row of %d columns", len(r))
		}
		var p SCTPPacket
		var err error
		if p.Frame, err = strconv.Atoi(r[0]); err != nil {
			return nil, fmt.Errorf("capture: frame number %q: %w", r[0], err)
		}
		p.Src, p.Dst = r[1], r[2]
		if p.Src == "" {
			p.Src, p.Dst = r[3], r[4]
		}
		// ICMP errors quoting an SCTP packet carry a second header: keep the outer.
		if p.SrcPort, err = strconv.Atoi(firstOf(r[5])); err != nil {
			return nil, fmt.Errorf("capture: frame %d: source port %q: %w", p.Frame, r[5], err)
		}
		if p.DstPort, err = strconv.Atoi(firstOf(r[6])); err != nil {
			return nil, fmt.Errorf("capture: frame %d: destination port %q: %w", p.Frame, r[6], err)
		}
		vt, err := strconv.ParseUint(strings.TrimPrefix(firstOf(r[7]), "0x"), 16, 32)
		if err != nil {
			return nil, fmt.Errorf("capture: frame %d: verification tag %q: %w", p.Frame, r[7], err)
		}
		p.VTag = uint32(vt)
		for _, c := range splitList(r[8]) {
			t, err := atoi(c)
			if err != nil {
				return nil, fmt.Errorf("capture: frame %d: chunk type %q: %w", p.Frame, c, err)
			}
			p.Chunks = append(p.Chunks, ChunkName(t))
		}
		for _, c := range splitList(r[9]) {
			v, err := strconv.ParseUint(c, 0, 32)
			if err != nil {
				return nil, fmt.Errorf("capture: frame %d: ppid %q: %w", p.Frame, c, err)
			}
			p.PPIDs = append(p.PPIDs, uint32(v))
		}
		pkts = append(pkts, p)
	}
	return pkts, nil
}

// atoi parses tshark's numbers: decimal, or hex with a 0x prefix.
func atoi(s string) (int, error) {
	base := 10
	if strings.HasPrefix(s, "0x") {
		s, base = s[2:], 16
	}
	v, err := strconv.ParseInt(s, base, 64)
	if err != nil {
		return 0, err
	}
	return int(v), nil
}

func firstOf(s string) string {
	if i := strings.IndexByte(s, ','); i >= 0 {
		return s[:i]
	}
	return s
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	parts := strings.Split(s, ",")
	out := parts[:0]
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// CountChunks counts chunks by name over packets.
func CountChunks(pkts []SCTPPacket) map[string]int {
	m := make(map[string]int)
	for _, p := range pkts {
		for _, c := range p.Chunks {
			m[c]++
		}
	}
	return m
}

// NGAPMessage is one NGAP PDU found in a capture.
type NGAPMessage struct {
	Frame         int
	Src, Dst      string
	Stream        int
	ProcedureCode int
	// RANUENGAPID and AMFUENGAPID are -1 when absent.
	RANUENGAPID int64
	AMFUENGAPID int64
}

// NGAP decodes the NGAP PDUs of a capture (one per DATA chunk; a packet
// bundling several yields several).
func NGAP(ctx context.Context, file string) ([]NGAPMessage, error) {
	rows, err := Fields(ctx, file, "ngap", "frame.number", "ip.src", "ip.dst", "sctp.data_sid",
		"ngap.procedureCode", "ngap.RAN_UE_NGAP_ID", "ngap.AMF_UE_NGAP_ID")
	if err != nil {
		return nil, err
	}
	return parseNGAPRows(rows)
}

func parseNGAPRows(rows [][]string) ([]NGAPMessage, error) {
	var msgs []NGAPMessage
	for _, r := range rows {
		if len(r) != 7 {
			return nil, fmt.Errorf("capture: ngap row of %d columns", len(r))
		}
		frame, err := strconv.Atoi(r[0])
		if err != nil {
			return nil, fmt.Errorf("capture: frame number %q: %w", r[0], err)
		}
		sids, procs := splitList(r[3]), splitList(r[4])
		rans, amfs := splitList(r[5]), splitList(r[6])
		for i, pc := range procs {
			m := NGAPMessage{Frame: frame, Src: r[1], Dst: r[2], RANUENGAPID: -1, AMFUENGAPID: -1}
			if m.ProcedureCode, err = atoi(pc); err != nil {
				return nil, fmt.Errorf("capture: frame %d: procedure code %q: %w", frame, pc, err)
			}
			if i < len(sids) {
				if m.Stream, err = atoi(sids[i]); err != nil {
					return nil, fmt.Errorf("capture: frame %d: stream %q: %w", frame, sids[i], err)
				}
			}
			// With bundling tshark lists IDs per frame, not per PDU: they are
			// attributed in order, which is exact for one PDU per packet.
			if i < len(rans) {
				if m.RANUENGAPID, err = strconv.ParseInt(rans[i], 10, 64); err != nil {
					return nil, fmt.Errorf("capture: frame %d: RAN-UE-NGAP-ID %q: %w", frame, rans[i], err)
				}
			}
			if i < len(amfs) {
				if m.AMFUENGAPID, err = strconv.ParseInt(amfs[i], 10, 64); err != nil {
					return nil, fmt.Errorf("capture: frame %d: AMF-UE-NGAP-ID %q: %w", frame, amfs[i], err)
				}
			}
			msgs = append(msgs, m)
		}
	}
	return msgs, nil
}
