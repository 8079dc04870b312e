package dataplane

import (
	"bytes"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestFastPathChecksumsWithOffloads: the established fast path
// (bpf/lib/fastpath.h) on packets that BPF_PROG_TEST_RUN cannot make. The
// client and backend veths keep their checksum and segmentation offloads,
// so their TCP and UDP packets reach the LB as CHECKSUM_PARTIAL (the L4
// checksum field holds only the pseudo-header sum) and TCP ones as GSO
// packets of up to 64 KB; the LB's own veths have them off, so the kernel
// finishes each checksum in software when the LB sends the packet on, from
// the field the datapath left. A field updated as if the checksum were
// final (the ports' change applied, the addresses' in the wrong sense)
// gives a wrong final checksum, which the receiver drops: the transfer
// stalls and its InCsumErrors counter moves. Every mode that rewrites, TCP
// (1 MiB each way) and UDP (datagrams of odd and even sizes), IPv4 and
// IPv6.
func TestFastPathChecksumsWithOffloads(t *testing.T) {
	te := newTrafficEnv(t)
	te.addV6(t)
	// The premise: offloads on where packets are made, off where the LB
	// sends them on.
	run(t, "ip", "netns", "exec", te.client, "ethtool", "-K", "eth0", "tx", "on", "tso", "on", "gso", "on")
	run(t, "ip", "netns", "exec", te.backend, "ethtool", "-K", "eth0", "tx", "on", "tso", "on", "gso", "on")
	run(t, "ip", "netns", "exec", te.lb, "ethtool", "-K", "lb0", "tx", "off")
	run(t, "ip", "netns", "exec", te.lb, "ethtool", "-K", "lb1", "tx", "off")
	echoStreams(t, te.backend, "[::]:8080")
	echoDatagrams(t, te.backend, "[::]:8081")

	d := te.load(t, false)
	t.Cleanup(func() { _ = d.Destroy() })
	id := uint32(0)
	for _, mode := range []Mode{ModeDefault, ModeOneArm, ModeFullNAT} {
		for _, proto := range []Proto{ProtoTCP, ProtoUDP} {
			for _, v6 := range []bool{false, true} {
				id++
				fam, vip := "v4", vipV4
				if v6 {
					fam, vip = "v6", vipV6
				}
				t.Run(fmt.Sprintf("%s/%s/%s", modeNames[mode], protoNames[proto], fam), func(t *testing.T) {
					vport, epPort := uint16(100+id), uint16(8080)
					if proto == ProtoUDP {
						epPort = 8081
					}
					if err := d.UpsertService(Service{ID: id, VIP: vip, PortStart: vport, Proto: proto, Mode: mode,
						Endpoints: []Endpoint{{Addr: epAddr(v6, 0), Port: epPort}}}); err != nil {
						t.Fatal(err)
					}
					before := csumErrors(t, te.client, te.backend)
					addr := netip.AddrPortFrom(vip, vport).String()
					if proto == ProtoTCP {
						streamThrough(t, te, addr, 1<<20)
					} else {
						datagramsThrough(t, te, addr)
					}
					if after := csumErrors(t, te.client, te.backend); after != before {
						t.Errorf("checksum errors counted by the receivers: %d before, %d after", before, after)
					}
				})
			}
		}
	}
}

// addV6 gives the traffic lab IPv6 addresses and routes next to its IPv4
// ones (fd00::/64 client side, fd01::/64 backend side; no DAD).
func (te *trafficEnv) addV6(t *testing.T) {
	t.Helper()
	ip := func(ns string, args ...string) { run(t, append([]string{"ip", "-n", ns}, args...)...) }
	ip(te.lb, "addr", "add", "fd00::1/64", "dev", "lb0", "nodad")
	ip(te.lb, "addr", "add", lbAddr1V6.String()+"/64", "dev", "lb1", "nodad")
	ip(te.client, "addr", "add", clientV6.String()+"/64", "dev", "eth0", "nodad")
	ip(te.backend, "addr", "add", epAddr(true, 0).String()+"/64", "dev", "eth0", "nodad")
	ip(te.client, "-6", "route", "add", "default", "via", "fd00::1")
	ip(te.backend, "-6", "route", "add", "default", "via", lbAddr1V6.String())
	run(t, "ip", "netns", "exec", te.lb, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	// The links came up moments ago, so their link-local addresses are
	// still in duplicate address detection; until it ends the kernel sends
	// no neighbour solicitation for the first forwarded packet and drops
	// it, and a TCP dial's one SYN retransmission can be lost the same way.
	deadline := time.Now().Add(5 * time.Second)
	for _, ns := range []string{te.lb, te.client, te.backend} {
		for {
			out, err := exec.Command("ip", "-n", ns, "-6", "addr", "show", "tentative").Output()
			if err != nil {
				t.Fatalf("addresses of %s: %v", ns, err)
			}
			if len(strings.TrimSpace(string(out))) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: IPv6 addresses still tentative after 5 s:\n%s", ns, out)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// echoStreams echoes every TCP connection's bytes back and half-closes
// after the client did.
func echoStreams(t *testing.T, ns, addr string) {
	t.Helper()
	var ln net.Listener
	var err error
	inNetns(t, ns, func() { ln, err = net.Listen("tcp", addr) })
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := io.Copy(c, c); err == nil {
					_ = c.(*net.TCPConn).CloseWrite()
				}
			}()
		}
	}()
}

// echoDatagrams sends every UDP datagram back to its sender.
func echoDatagrams(t *testing.T, ns, addr string) {
	t.Helper()
	var pc net.PacketConn
	var err error
	inNetns(t, ns, func() { pc, err = net.ListenPacket("udp", addr) })
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
}

// streamThrough sends n pseudo-random bytes to addr from the client and
// wants exactly them back.
func streamThrough(t *testing.T, te *trafficEnv, addr string, n int) {
	t.Helper()
	c, err := te.dial(t, addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	sent := make([]byte, n)
	rand.New(rand.NewSource(int64(n))).Read(sent)
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write(sent)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		wrote <- err
	}()
	got, err := io.ReadAll(c)
	if werr := <-wrote; werr != nil {
		t.Fatalf("write: %v", werr)
	}
	if err != nil {
		t.Fatalf("read after %d of %d bytes: %v", len(got), n, err)
	}
	if !bytes.Equal(got, sent) {
		t.Fatalf("echo differs: %d bytes back for %d sent", len(got), n)
	}
}

// datagramsThrough sends UDP datagrams of odd and even sizes to addr from
// the client and wants each back.
func datagramsThrough(t *testing.T, te *trafficEnv, addr string) {
	t.Helper()
	var c net.Conn
	var err error
	inNetns(t, te.client, func() { c, err = net.Dial("udp", addr) })
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	r := rand.New(rand.NewSource(7))
	buf := make([]byte, 2048)
	for i, size := range []int{1, 2, 17, 64, 333, 512, 999, 1000, 1401, 1402} {
		msg := make([]byte, size)
		r.Read(msg)
		// A lost datagram is sent again; one that never comes back fails.
		ok := false
		for try := 0; try < 3 && !ok; try++ {
			if _, err := c.Write(msg); err != nil {
				t.Fatalf("datagram %d: %v", i, err)
			}
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			n, err := c.Read(buf)
			ok = err == nil && bytes.Equal(buf[:n], msg)
		}
		if !ok {
			t.Fatalf("datagram %d (%d bytes) not echoed intact", i, size)
		}
	}
}

// csumErrors sums the TCP, UDP and UDP6 InCsumErrors counters of the
// namespaces.
func csumErrors(t *testing.T, nss ...string) uint64 {
	t.Helper()
	var sum uint64
	for _, ns := range nss {
		out, err := exec.Command("ip", "netns", "exec", ns, "cat", "/proc/net/snmp", "/proc/net/snmp6").Output()
		if err != nil {
			t.Fatalf("counters of %s: %v", ns, err)
		}
		for _, c := range []struct{ prefix, name string }{{"Tcp:", "InCsumErrors"}, {"Udp:", "InCsumErrors"}, {"", "Udp6InCsumErrors"}} {
			var v uint64
			var ok bool
			if c.prefix == "" {
				v, ok = snmp6Counter(string(out), c.name)
			} else {
				v, ok = snmpCounter(string(out), c.prefix, c.name)
			}
			if !ok {
				t.Fatalf("counter %s%s not found in %s's /proc/net/snmp{,6}", c.prefix, c.name, ns)
			}
			sum += v
		}
	}
	return sum
}

// snmpCounter reads a counter of /proc/net/snmp (a line of names, then a
// line of values, both starting with prefix).
func snmpCounter(out, prefix, name string) (uint64, bool) {
	var names []string
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, prefix) {
			continue
		}
		f := strings.Fields(l)[1:]
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == name && i < len(f) {
				v, err := strconv.ParseUint(f[i], 10, 64)
				return v, err == nil
			}
		}
	}
	return 0, false
}

// snmp6Counter reads a counter of /proc/net/snmp6 (name value lines).
func snmp6Counter(out, name string) (uint64, bool) {
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) == 2 && f[0] == name {
			v, err := strconv.ParseUint(f[1], 10, 64)
			return v, err == nil
		}
	}
	return 0, false
}
