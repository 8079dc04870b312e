package diam

import (
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/telcolb/telcolb/l7parse/diameter"
)

// Policy chooses the server of a new session.
type Policy int

const (
	// RoundRobin cycles through the eligible servers.
	RoundRobin Policy = iota
	// LeastSessions picks the eligible server holding the fewest sessions.
	LeastSessions
	// Weighted spreads sessions in proportion to server weights (smooth
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

// Mode is the agent's role (RFC 6733 §2.8).
type Mode int

const (
	// Relay advertises the relay application (0xffffffff) and forwards
	// every application.
	Relay Mode = iota
	// Proxy advertises only Config.Applications and answers requests of
	// other applications with 3007 (DIAMETER_APPLICATION_UNSUPPORTED).
	Proxy
)

func (m Mode) String() string {
	if m == Proxy {
		return "proxy"
	}
	return "relay"
}

// Server is one Diameter server behind the agent.
type Server struct {
	// Name labels metrics and logs (the shell uses the address).
	Name string
	Addr netip.AddrPort
	// Weight biases the Weighted policy; 0 means 1.
	Weight int
}

// Config configures a Machine.
type Config struct {
	// Identity is the agent's Origin-Host and Origin-Realm.
	Identity diameter.Identity
	// HostIPs go into the agent's CER and CEA (Host-IP-Address).
	HostIPs []netip.Addr
	Mode    Mode
	// Applications are the application IDs a proxy agent serves (Auth- or
	// Acct-); ignored by a relay.
	Applications []uint32
	Servers      []Server
	Policy       Policy
	// OriginStateID is the agent's Origin-State-Id (its start time): it
	// changes when the agent restarts, telling peers their sessions are
	// gone.
	OriginStateID uint32
	// Tw is the watchdog interval (RFC 3539 §3.4.1; default 30s, minimum
	// 6s there; tests use less).
	Tw time.Duration
	// Tc is the delay between connection attempts to a server (RFC 6733
	// §2.1; default 30s).
	Tc time.Duration
	// RequestTimeout bounds how long a forwarded request waits for its
	// answer before the client gets 3002 (default 30s).
	RequestTimeout time.Duration
	// SessionIdle ends a Session-Id binding not used for this long
	// (default 1h): a session whose termination request never came.
	SessionIdle time.Duration
	// MaxTries bounds the servers one request is sent to (3004 answers
	// and failovers; default 3).
	MaxTries int
	Logger   *slog.Logger
}

// ConnID names a transport connection; the shell allocates them, never 0.
type ConnID uint64

// Event is one input of Machine.Step.
type Event interface{ isEvent() }

// Accepted: a client connected to the agent.
type Accepted struct{ Conn ConnID }

// Dialed: the connection a Dial action asked for is up.
type Dialed struct {
	Server int
	Conn   ConnID
}

// DialFailed: the connection a Dial action asked for could not be made.
type DialFailed struct{ Server int }

// Message: one whole Diameter message arrived on Conn. The shell splits the
// stream with diameter.FrameLen; when that fails it passes what it has
// (for an error answer) and then Closed. Data, and its spare capacity up
// to cap(Data), belong to the machine from then on: it edits and forwards
// the buffer in place (hop-by-hop identifier, Route-Record appended), so
// a shell that leaves room for a Route-Record spares the machine a copy,
// and one whose buffer shares capacity with anything else must clip it
// (Data[:n:n]).
//
// Ref, when not nil, is a counted reference to the memory Data lives in (a
// shell recycling its read buffers): the event hands the machine one
// reference, which it releases once it neither holds nor sends Data, or
// passes on with a Send of Data (Action.Ref). The machine keeps its own
// reference for as long as a forwarded request may be sent again
// (failover, 3004), so the memory is never reused while anything can
// still send it. nil: the garbage collector keeps Data alive.
type Message struct {
	Conn ConnID
	Data []byte
	Ref  Ref
}

// Ref counts the holders of a buffer the shell recycles when the count
// drops to zero.
type Ref interface {
	Retain()
	Release()
}

// Closed: a connection is gone (peer close, error, or after a Close action).
type Closed struct{ Conn ConnID }

// Tick lets timers run; the shell sends one periodically.
type Tick struct{}

// Shutdown starts a graceful stop: every peer gets a DPR (Disconnect-Cause
// REBOOTING) and nothing is redialled.
type Shutdown struct{}

func (Accepted) isEvent()   {}
func (Dialed) isEvent()     {}
func (DialFailed) isEvent() {}
func (Message) isEvent()    {}
func (Closed) isEvent()     {}
func (Tick) isEvent()       {}
func (Shutdown) isEvent()   {}

// Side names the peer class.
type Side uint8

const (
	ClientSide Side = iota + 1
	ServerSide
)

func (s Side) String() string {
	if s == ClientSide {
		return "client"
	}
	return "server"
}

// ActionKind says what an Action asks for.
type ActionKind uint8

const (
	// Send Data on Conn.
	Send ActionKind = iota + 1
	// Close Conn once the Sends before it are written.
	Close
	// Dial a connection to Server; answer with Dialed or DialFailed.
	Dial
	// Request counts a request received from Side (App, Cmd).
	Request
	// Answer counts an answer received from Side (App, Cmd, Result).
	Answer
	// Retransmitted counts a request re-sent with the T flag to Server
	// after its first server failed.
	Retransmitted
	// Rejected counts a request the agent answered itself with Result
	// (Reason says why), or an answer or message it dropped (Result 0).
	Rejected
	// PeerState reports Server's new watchdog state.
	PeerState
)

func (k ActionKind) String() string {
	switch k {
	case Send:
		return "send"
	case Close:
		return "close"
	case Dial:
		return "dial"
	case Request:
		return "request"
	case Answer:
		return "answer"
	case Retransmitted:
		return "retransmitted"
	case Rejected:
		return "rejected"
	case PeerState:
		return "peer-state"
	}
	return fmt.Sprintf("ActionKind(%d)", uint8(k))
}

// Action is one output of Machine.Step. Fields irrelevant to Kind are zero.
type Action struct {
	Kind ActionKind
	Conn ConnID
	Data []byte
	// Ref (Send only), when not nil, is a reference to Data's memory
	// handed to the shell: released once Data is written, or dropped
	// unwritten.
	Ref    Ref
	Server int
	Side   Side
	App    uint32
	Cmd    uint32
	Result uint32
	Reason string
	State  State
}

// State is a connection's state: the capabilities exchange, then the RFC
// 3539 watchdog states.
type State uint8

const (
	// Down: no connection (a server waiting Tc before the next dial).
	Down State = iota
	// Connecting: a server being dialled.
	Connecting
	// WaitCE: connected, capabilities exchange not done (CER sent to a
	// server, or a client's CER awaited).
	WaitCE
	// Okay: open and answering.
	Okay
	// Suspect: a watchdog went unanswered; requests fail over.
	Suspect
	// Reopen: reconnected after Down; open again after 3 watchdogs
	// answered (RFC 3539 §3.4.1).
	Reopen
	// Closing: DPR sent or received; closed once answered.
	Closing
)

func (s State) String() string {
	return [...]string{"down", "connecting", "wait-ce", "okay", "suspect", "reopen", "closing"}[s]
}
