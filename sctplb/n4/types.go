package n4

import (
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/telcolb/telcolb/l7parse/pfcp"
)

// Policy chooses the UPF of a new session.
type Policy int

const (
	// RoundRobin cycles through the available UPFs.
	RoundRobin Policy = iota
	// LeastSessions picks the available UPF holding the fewest sessions.
	LeastSessions
	// Weighted spreads sessions in proportion to UPF weights (smooth
	// weighted round robin).
	Weighted
)

func (p Policy) String() string {
	switch p {
	case RoundRobin:
		return "rr"
	case LeastSessions:
		return "least-sessions"
	case Weighted:
		return "weighted"
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

// LossPolicy says what happens to the sessions of a UPF that is lost (not
// merely restarted).
type LossPolicy int

const (
	// Move replays the sessions to other UPFs chosen by the policy. Right
	// when the SMF allocates the F-TEIDs (or the UPFs share an N3/N9
	// address); otherwise the peers keep sending to the lost UPF's tunnels.
	Move LossPolicy = iota
	// Release forgets the sessions; the SMF's next request for one gets
	// "Session context not found", and it releases the PDU session.
	Release
)

func (p LossPolicy) String() string {
	if p == Release {
		return "release"
	}
	return "move"
}

// UPF is one backend UPF.
type UPF struct {
	Name string
	Addr netip.AddrPort
	// Weight biases the Weighted policy; 0 means 1.
	Weight int
}

// SteeringRule confines the new sessions it matches to some UPFs: the
// operator's mapping of a DNN, a slice or a network instance to the UPFs
// that serve it (say, the only ones with N6 toward that data network). Set
// fields must all match; at least one is set. The first matching rule
// applies; a session no rule matches may go to any UPF. A matching
// session whose UPFs are all unavailable is refused (No resources
// available) rather than sent to a UPF the operator did not list.
type SteeringRule struct {
	// DNN matches the APN/DNN IE, case-insensitively, in full or as its
	// network identifier ("internet" matches "internet.mnc001.mcc001.gprs").
	DNN string
	// SNSSAI matches the S-NSSAI IE: "1" any slice of SST 1, "1-010203"
	// that SST and SD.
	SNSSAI string
	// NetworkInstance matches any Network Instance of the request's PDIs
	// or forwarding parameters.
	NetworkInstance string
	// UPFs names the UPFs (UPF.Name) the matching sessions may use.
	UPFs []string
}

// Config configures a Machine.
type Config struct {
	UPFs   []UPF
	Policy Policy
	OnLoss LossPolicy
	// Steering restricts new sessions to UPFs by DNN, slice or network
	// instance; empty means every session may use every UPF.
	Steering []SteeringRule
	// NodeID is the proxy's Node ID toward SMFs and UPFs.
	NodeID pfcp.NodeID
	// SMFSide is the proxy's address in the UP F-SEIDs the SMFs get (the
	// VIP); UPFSide its address in the CP F-SEIDs the UPFs get, where they
	// send Session Report Requests (the address the shell sends to UPFs
	// from).
	SMFSide, UPFSide netip.Addr
	// Recovery is the proxy's Recovery Time Stamp (its start time).
	Recovery time.Time
	// T1 and N1 (TS 29.244 §6.4): retransmission timer and count of the
	// requests the proxy sends (defaults 3s, 3).
	T1 time.Duration
	N1 int
	// HeartbeatInterval paces the proxy's heartbeats to each peer
	// (default 10s).
	HeartbeatInterval time.Duration
	// LossTimeout is how long a UPF may stay unreachable before it is lost
	// and OnLoss applies (default 60s).
	LossTimeout time.Duration
	// CacheTTL is how long answers are kept for retransmitted requests
	// (default 2*T1*(N1+1)+1s).
	CacheTTL time.Duration
	// ReplayWindow bounds the replay requests outstanding per UPF
	// (default 256).
	ReplayWindow int
	Logger       *slog.Logger
}

// Event is one input of Machine.Step.
type Event interface{ isEvent() }

// Datagram: a PFCP datagram arrived from From. The machine tells UPFs (by
// address) from SMFs (everyone else).
type Datagram struct {
	From netip.AddrPort
	Data []byte
}

// Tick lets timers run; the shell sends one periodically.
type Tick struct{}

func (Datagram) isEvent() {}
func (Tick) isEvent()     {}

// Side names the peer class of a message.
type Side uint8

const (
	SMFSide Side = iota + 1
	UPFSide
)

func (s Side) String() string {
	if s == SMFSide {
		return "smf"
	}
	return "upf"
}

// ActionKind says what an Action asks for.
type ActionKind uint8

const (
	// Send Data to To (a UPF when Side is UPFSide).
	Send ActionKind = iota + 1
	// Received counts a message of MsgType from Side (metrics only).
	Received
	// Absorbed counts a retransmitted request answered from the cache or
	// dropped while its answer is pending.
	Absorbed
	// Replayed counts one session replayed to UPF.
	Replayed
	// SteeringFailure: a message could not be steered; Reason says why.
	SteeringFailure
	// Malformed: an undecodable datagram arrived from Side.
	Malformed
)

func (k ActionKind) String() string {
	switch k {
	case Send:
		return "send"
	case Received:
		return "received"
	case Absorbed:
		return "absorbed"
	case Replayed:
		return "replayed"
	case SteeringFailure:
		return "steering-failure"
	case Malformed:
		return "malformed"
	}
	return fmt.Sprintf("ActionKind(%d)", uint8(k))
}

// Action is one output of Machine.Step. Fields irrelevant to Kind are zero.
type Action struct {
	Kind    ActionKind
	Side    Side
	To      netip.AddrPort
	Data    []byte
	MsgType uint8
	UPF     int
	Reason  string
}
