// Package steer is the N2 proxy's steering logic as a pure state machine:
// association events and NGAP messages go in through Machine.Step, the sends,
// dials and closes to perform come out as Actions. It owns no sockets, starts
// no goroutines and reads no clock (time comes in with every Step), so every
// behaviour is testable by feeding events.
//
// Topology. Each gNB association (the gNB's view: one AMF, the proxy) is
// mirrored by one upstream association per configured AMF, opened by the
// machine (Dial actions) after the gNB's NG Setup Request and set up with that
// request. An AMF therefore sees every gNB as an ordinary NG-RAN node, with
// the gNB's own Global RAN Node ID, and addresses a gNB simply by sending on
// that gNB's association: Paging and other AMF-initiated non-UE messages need
// no TAI filtering in the proxy (the AMF already chose which gNBs to page).
//
// Identities. AMF-UE-NGAP-IDs are never rewritten. UE records are keyed by
// (gNB association, RAN-UE-NGAP-ID), which the gNB allocates and which is
// unique on its association, and by (AMF, AMF-UE-NGAP-ID), which TS 38.413
// makes unique within one AMF. Two AMFs may hand out the same AMF-UE-NGAP-ID;
// both reach the gNB, which keys its UE contexts by its own RAN-UE-NGAP-ID.
// The only lookups by AMF-UE-NGAP-ID alone (handover target, Path Switch
// Request) are scoped per AMF and rejected as ambiguous when two AMFs match.
package steer

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/telcolb/telcolb/sctplb/abort"
)

// AssocID names an SCTP association. The I/O shell numbers gNB associations
// below UpstreamBit; the machine numbers the upstream (AMF) associations it
// dials with UpstreamBit set, so the two never collide.
type AssocID uint32

// UpstreamBit marks machine-allocated upstream association IDs.
const UpstreamBit AssocID = 1 << 31

// Policy chooses an AMF for a UE that no 5G-S-TMSI ties to a live AMF.
type Policy int

const (
	// RoundRobin cycles through the eligible AMFs.
	RoundRobin Policy = iota
	// LeastUEs picks the eligible AMF holding the fewest UE contexts.
	LeastUEs
	// Weighted spreads new UEs in proportion to AMF weights (smooth weighted
	// round robin).
	Weighted
)

func (p Policy) String() string {
	switch p {
	case RoundRobin:
		return "rr"
	case LeastUEs:
		return "least-ues"
	case Weighted:
		return "weighted"
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

// ParsePolicy reads a policy name as String writes it.
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "", "rr":
		return RoundRobin, nil
	case "least-ues":
		return LeastUEs, nil
	case "weighted":
		return Weighted, nil
	}
	return 0, fmt.Errorf("unknown steering policy %q (want rr, least-ues or weighted)", s)
}

// AMF is one backend AMF. The shell resolves Name to addresses when it dials.
type AMF struct {
	Name string
	// Weight biases the Weighted policy; 0 means 1.
	Weight int
}

// Config configures a Machine.
type Config struct {
	AMFs   []AMF
	Policy Policy
	// ProxyName is the AMF Name the gNBs see in NG Setup Response.
	ProxyName string
	// SetupWait is how long the gNB's NG Setup Response waits for slower AMFs
	// once the first AMF answered (default 1s).
	SetupWait time.Duration
	// SetupTimeout bounds the wait for any AMF answer; after it the gNB gets
	// NG Setup Failure with Time To Wait (default 5s).
	SetupTimeout time.Duration
	// RedialMin and RedialMax bound the exponential backoff of upstream
	// redials (defaults 1s and 30s).
	RedialMin, RedialMax time.Duration
	// DrainTimeout bounds how long upstream associations of a lost gNB stay
	// open for the AMFs to release its UEs (default 5s).
	DrainTimeout time.Duration
	// PeerLogRate and PeerLogBurst bound the WARN lines one peer's messages
	// can cause (per second, and in a burst; defaults 1 and 5); lines over
	// the limit are counted (Suppressed) and summed into the next line.
	PeerLogRate  float64
	PeerLogBurst int
	// PeerErrorRate and PeerErrorBurst bound the Error Indications sent to
	// one peer (defaults 10/s and 20).
	PeerErrorRate  float64
	PeerErrorBurst int
	// Replicate keeps track of the replicable state (replicate.go):
	// TakeChanges and Export report it, Import parks a peer's.
	Replicate bool
	Logger    *slog.Logger
}

// Event is one input of Machine.Step.
type Event interface{ isEvent() }

// GNBUp: a gNB association was accepted. OutStreams is the number of
// outbound streams negotiated. Abort, when the transport tells it (zero
// otherwise), names the association for an ABORT from another node: the
// gNB's replicated record carries it so that a peer taking over can end
// the association at once (replicate.go).
type GNBUp struct {
	Assoc      AssocID
	OutStreams uint16
	Abort      abort.Target
}

// GNBDown: a gNB association ended.
type GNBDown struct{ Assoc AssocID }

// GNBMessage: an NGAP PDU arrived from a gNB.
type GNBMessage struct {
	Assoc  AssocID
	Stream uint16
	Data   []byte
}

// AMFUp: an upstream association the machine dialed is established.
type AMFUp struct {
	Assoc      AssocID
	OutStreams uint16
}

// AMFDown: an upstream association ended or could not be established. The
// shell reports it for every upstream association that ends, including ones
// the machine closed.
type AMFDown struct{ Assoc AssocID }

// AMFMessage: an NGAP PDU arrived from an AMF.
type AMFMessage struct {
	Assoc  AssocID
	Stream uint16
	Data   []byte
}

// Tick lets timers run; the shell sends one periodically.
type Tick struct{}

// AddAMF adds a backend at run time: every gNB that completed (or is in)
// NG Setup gets an association to it, and once it answers, the gNB an AMF
// Configuration Update with the wider GUAMI list; new UEs spread over it.
// Adding a name that was removed brings that AMF back under its old index.
type AddAMF struct{ AMF AMF }

// RemoveAMF retires a backend at run time, as if it were lost for good: its
// established UEs are released toward their gNBs, UEs it never answered are
// re-steered, its GUAMIs are announced unavailable and it is never
// redialled. Its index stays reserved (UEs() reports 0 for it).
type RemoveAMF struct{ Name string }

func (GNBUp) isEvent()      {}
func (GNBDown) isEvent()    {}
func (GNBMessage) isEvent() {}
func (AMFUp) isEvent()      {}
func (AMFDown) isEvent()    {}
func (AMFMessage) isEvent() {}
func (Tick) isEvent()       {}
func (AddAMF) isEvent()     {}
func (RemoveAMF) isEvent()  {}

// ActionKind says what an Action asks for.
type ActionKind uint8

const (
	// Send Data on Assoc, Stream, with PPID 60.
	Send ActionKind = iota + 1
	// Dial AMF (index into Config.AMFs) and report the result as AMFUp or
	// AMFDown for Assoc.
	Dial
	// Close Assoc (graceful shutdown).
	Close
	// Count a message of Procedure in direction Dir (metrics only).
	CountMessage
	// SteeringFailure: a message could not be steered; Reason says why.
	SteeringFailure
	// Malformed: an undecodable PDU arrived on Assoc.
	Malformed
	// Rejected: a decodable PDU failed the semantic checks of TS 38.413
	// section 10 (Reason: missing IE, undefined message, wrong sender) and
	// changed nothing; Procedure and Dir say what it was.
	Rejected
	// Suppressed: a log line or Error Indication (Reason "log" or
	// "error-indication") caused by peer Assoc was dropped by its rate limit.
	Suppressed
	// NASIdentity: an Initial UE Message without 5G-S-TMSI had its NAS read;
	// Reason is the identity kind found (5g-guti, suci, ciphered, ...).
	NASIdentity
)

func (k ActionKind) String() string {
	switch k {
	case Send:
		return "send"
	case Dial:
		return "dial"
	case Close:
		return "close"
	case CountMessage:
		return "count"
	case SteeringFailure:
		return "steering-failure"
	case Malformed:
		return "malformed"
	case Rejected:
		return "rejected"
	case Suppressed:
		return "suppressed"
	case NASIdentity:
		return "nas-identity"
	}
	return fmt.Sprintf("ActionKind(%d)", uint8(k))
}

// Direction of a counted message.
type Direction uint8

const (
	Uplink   Direction = iota + 1 // from a gNB
	Downlink                      // from an AMF
)

func (d Direction) String() string {
	if d == Uplink {
		return "uplink"
	}
	return "downlink"
}

// Action is one output of Machine.Step. Fields irrelevant to Kind are zero.
type Action struct {
	Kind      ActionKind
	Assoc     AssocID
	Stream    uint16
	Data      []byte
	AMF       int
	Procedure int64
	Dir       Direction
	Reason    string
}
