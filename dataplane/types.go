package dataplane

import (
	"net/netip"
	"time"

	"github.com/telcolb/telcolb/bpf"
)

// Proto is an IP protocol number.
type Proto uint8

const (
	ProtoICMP   Proto = 1
	ProtoTCP    Proto = 6
	ProtoUDP    Proto = 17
	ProtoICMPv6 Proto = 58
	ProtoSCTP   Proto = 132
)

// Mode is the NAT mode of a service (enum lb_mode, generated into package bpf).
type Mode uint8

const (
	ModeDefault Mode = bpf.ModeDefault // DNAT, client source kept
	ModeOneArm  Mode = bpf.ModeOnearm  // SNAT to the egress interface's address
	ModeFullNAT Mode = bpf.ModeFullnat // SNAT to the VIP
	ModeDSR     Mode = bpf.ModeDsr     // no L3 rewrite, L2 forward to the endpoint
)

// Select is the endpoint selection algorithm (enum lb_sel).
type Select uint8

const (
	SelectRR        Select = bpf.SelRr
	SelectHash      Select = bpf.SelHash
	SelectPersist   Select = bpf.SelPersist
	SelectLeastConn Select = bpf.SelLeastconn
	// SelectMaglev: consistent hashing of the 5-tuple over a table built
	// from the endpoints' addresses (maglev.go): every node with the same
	// endpoints picks the same endpoint for a new flow.
	SelectMaglev Select = bpf.SelMaglev
)

// MaxEndpoints is the most endpoints one service may have.
const MaxEndpoints = 64

// MaxSecondaryVIPs is the most secondary VIPs of a service (LB_MAX_VIPS-1).
const MaxSecondaryVIPs = 3

// Service is one rule as the datapath sees it. ID is chosen by the caller
// (the daemon), stable across restarts, 1..MaxServices-1.
type Service struct {
	ID  uint32
	VIP netip.Addr
	// SecondaryVIPs (SCTP multi-homing, at most MaxSecondaryVIPs) belong to
	// the same rule: an association's paths to any of them reach the same
	// endpoint, and the endpoint's extra addresses are shown to the client
	// as these VIPs, in order.
	SecondaryVIPs []netip.Addr
	PortStart     uint16
	PortEnd       uint16 // == PortStart for a single port
	Proto         Proto
	Mode          Mode
	Select        Select
	IdleTimeout   time.Duration // 0: protocol default
	Endpoints     []Endpoint
	// SCTPPathFailover sends the endpoint's packets toward a client address
	// the client has stopped using onto the client's live path (SCTP
	// multi-homing, bpf/lib/sctp_steer.h), after SCTPPathHoldDown (0: 1 s,
	// at most MaxPathHoldDown) without client packets from that address.
	SCTPPathFailover bool
	SCTPPathHoldDown time.Duration
}

// MaxPathHoldDown is the longest Service.SCTPPathHoldDown (16-bit ms).
const MaxPathHoldDown = 65535 * time.Millisecond

// Endpoint is one backend. Port 0 keeps the client's destination port.
type Endpoint struct {
	Addr   netip.Addr
	Port   uint16
	Weight uint16
	Down   bool // probe verdict: new flows avoid it, existing ones continue
}

// Conn is one connection (both directions) read from conntrack.
type Conn struct {
	Proto                    Proto
	ServiceID                uint32
	Endpoint                 int // index into Service.Endpoints
	Client                   netip.AddrPort
	VIP                      netip.AddrPort
	Backend                  netip.AddrPort // endpoint address:port
	Source                   netip.AddrPort // source as the endpoint sees it
	State                    string
	OrigPackets, OrigBytes   uint64
	ReplyPackets, ReplyBytes uint64
	Idle                     time.Duration
	ExpiresIn                time.Duration
	VTagClient, VTagEndpoint uint32 // SCTP only
	// Paths are the secondary paths of a multi-homed SCTP association (the
	// primary one is the Conn itself).
	Paths []Path
	// Steering is the association's LB-assisted path failover; nil when
	// the LB never steered it.
	Steering *Steering
}

// Steering says where the LB sends the endpoint's packets of an SCTP
// association instead of the client address they are addressed to.
type Steering struct {
	// Count is how many steerings began over the association's life.
	Count uint32
	// Active: the endpoint's packets toward From go to To now (from VIP),
	// for Since; otherwise From/To/VIP describe the last steering.
	Active   bool
	From, To netip.Addr
	VIP      netip.Addr
	Since    time.Duration
}

// Path is one (client address, VIP) pair of a multi-homed SCTP association
// and the endpoint address it is translated to, with its own counters.
type Path struct {
	Client, VIP, Backend, Source netip.Addr
	OrigPackets, OrigBytes       uint64
	ReplyPackets, ReplyBytes     uint64
}

// EndpointStats are the counters of one endpoint, summed over CPUs.
type EndpointStats struct {
	Packets, Bytes uint64
	Sessions       uint64 // connections created toward it
	Active         uint64 // live conntrack entries toward it
}

// ServiceStats are the counters of one service.
type ServiceStats struct {
	Packets, Bytes uint64
	Sessions       uint64
	Active         uint64
	Endpoints      []EndpointStats // indexed like Service.Endpoints
	// PathSteerings counts the SCTP path failover steerings begun.
	PathSteerings uint64
	// SlowPathPackets counts the established packets that took the slow
	// path (bpf ct_established) rather than a fast one.
	SlowPathPackets uint64
}

// DropReason names why the datapath dropped a packet (metrics label).
type DropReason string
