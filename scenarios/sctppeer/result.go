package sctppeer

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// The client's reports: Result for one association, ManyResult for a
// client of several (ClientOptions.Associations).

// Event is an association or peer-address event seen by a peer.
type Event struct {
	// AtMs is milliseconds since the client started (server: since start).
	AtMs  int64  `json:"atMs"`
	Kind  string `json:"kind"`  // "assoc" or "paddr" or "shutdown" or "remote-error" or "send-failed"
	State string `json:"state"` // COMM_UP, ADDR_UNREACHABLE, ...
	Addr  string `json:"addr,omitempty"`
	Assoc uint32 `json:"assoc"`
}

// Result is the client's one-line JSON report.
type Result struct {
	Associated bool     `json:"associated"`
	Sent       int      `json:"sent"`
	Echoed     int      `json:"echoed"`
	Lost       int      `json:"lost"`
	Duplicates int      `json:"duplicates"`
	Corrupt    int      `json:"corrupt"`
	WrongStrm  int      `json:"wrongStream"`
	ServerID   string   `json:"serverID"`
	ServerIDs  []string `json:"serverIDs,omitempty"`
	PeerAddrs  []string `json:"peerAddrs"`
	LocalAddrs []string `json:"localAddrs"`
	Events     []Event  `json:"events"`
	// DialAttempts is how many times the association was dialled (more
	// than 1: the earlier attempts timed out, ClientOptions.DialAttempts).
	DialAttempts int `json:"dialAttempts,omitempty"`
	// Failovers counts ADDR_UNREACHABLE events.
	Failovers int `json:"failovers"`
	// MaxGapMs is the longest time between two echoes, or from the last
	// echo to the end of the run when echoes are missing.
	MaxGapMs  int64  `json:"maxGapMs"`
	ElapsedMs int64  `json:"elapsedMs"`
	Error     string `json:"error,omitempty"`
	// AllAcked, when echoes are missing at the end, says the client's
	// stack had nothing in flight after the wait: the peer acknowledged
	// every DATA chunk it ever sent (usrsctp.SendQueue, read before the
	// close). StuckBytes is what it still held unsent then.
	AllAcked   bool   `json:"allAcked,omitempty"`
	StuckBytes uint32 `json:"stuckBytes,omitempty"`
}

// OK reports whether the run associated and got every echo back intact.
func (r Result) OK() bool {
	return r.Associated && r.Error == "" && r.Lost == 0 && r.Corrupt == 0 && r.WrongStrm == 0 && r.Echoed == r.Sent
}

// ManyResult is the one-line JSON report of a client running several
// associations: each association's Result, in the order of their local
// ports, and their sum.
type ManyResult struct {
	Associations []Result `json:"associations"`
	Total        Total    `json:"total"`
	// Error is a failure of the whole client (bad options, no stack).
	Error string `json:"error,omitempty"`
}

// Total sums a ManyResult's associations.
type Total struct {
	Associations int `json:"associations"`
	Associated   int `json:"associated"`
	// OK counts the associations whose Result is OK.
	OK         int `json:"ok"`
	Sent       int `json:"sent"`
	Echoed     int `json:"echoed"`
	Lost       int `json:"lost"`
	Duplicates int `json:"duplicates"`
	Corrupt    int `json:"corrupt"`
	WrongStrm  int `json:"wrongStream"`
	Failovers  int `json:"failovers"`
	// Errors counts the associations with an Error.
	Errors int `json:"errors"`
	// MaxGapMs is the longest gap of any association.
	MaxGapMs  int64 `json:"maxGapMs"`
	ElapsedMs int64 `json:"elapsedMs"`
}

// Summarize builds the ManyResult of rs.
func Summarize(rs []Result, elapsed time.Duration) ManyResult {
	m := ManyResult{Associations: rs, Total: Total{Associations: len(rs), ElapsedMs: elapsed.Milliseconds()}}
	t := &m.Total
	for _, r := range rs {
		if r.Associated {
			t.Associated++
		}
		if r.OK() {
			t.OK++
		}
		if r.Error != "" {
			t.Errors++
		}
		t.Sent += r.Sent
		t.Echoed += r.Echoed
		t.Lost += r.Lost
		t.Duplicates += r.Duplicates
		t.Corrupt += r.Corrupt
		t.WrongStrm += r.WrongStrm
		t.Failovers += r.Failovers
		t.MaxGapMs = max(t.MaxGapMs, r.MaxGapMs)
	}
	return m
}

// OK reports whether the client ran at least one association and every
// one is OK.
func (m ManyResult) OK() bool {
	if m.Error != "" || len(m.Associations) == 0 || m.Total.Associations != len(m.Associations) {
		return false
	}
	for _, r := range m.Associations {
		if !r.OK() {
			return false
		}
	}
	return true
}

// ParseManyResult extracts a ManyResult: the last line of out that is a
// JSON object. A line that is not a ManyResult (a single Result, or
// associations that do not match their total) is an error.
func ParseManyResult(out string) (ManyResult, error) {
	line, err := lastJSONLine(out)
	if err != nil {
		return ManyResult{}, err
	}
	var m ManyResult
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		return ManyResult{}, fmt.Errorf("sctppeer: result line: %w", err)
	}
	if m.Error == "" && (len(m.Associations) == 0 || m.Total.Associations != len(m.Associations)) {
		return ManyResult{}, fmt.Errorf("sctppeer: result line has %d associations, total says %d: not a many-association result",
			len(m.Associations), m.Total.Associations)
	}
	return m, nil
}

func summary(r Result) string {
	return fmt.Sprintf("associated=%v sent=%d echoed=%d lost=%d corrupt=%d wrongStream=%d error=%q",
		r.Associated, r.Sent, r.Echoed, r.Lost, r.Corrupt, r.WrongStrm, r.Error)
}

// ParseResult extracts the client's Result: the last line of out that is a
// JSON object.
func ParseResult(out string) (Result, error) {
	line, err := lastJSONLine(out)
	if err != nil {
		return Result{}, err
	}
	var r Result
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		return Result{}, fmt.Errorf("sctppeer: result line: %w", err)
	}
	return r, nil
}

func lastJSONLine(out string) (string, error) {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if line := strings.TrimSpace(lines[i]); strings.HasPrefix(line, "{") {
			return line, nil
		}
	}
	return "", errors.New("sctppeer: no result line")
}

// StalledInStack says whether an association's missing echoes were lost
// inside a usrsctp stack rather than on the path: after the client's
// wait its stack had nothing in flight (r.AllAcked), and neither had the
// server's at its last reading before the close (closed, the server's
// "closed" event of that association, InFlight 0) or, when the close
// never reached the server, at a reading after the client's wait (its
// "state" event, asked for once the client was done). Every DATA chunk
// either stack sent was then acknowledged by the other, so the path
// delivered all of it; a chunk the path loses for good stays in flight,
// retransmitted. usrsctp 0.9.5 stops sending a stream under load
// (docs/testing.md); so does nothing else seen.
func StalledInStack(r Result, closed *ServerEvent) bool {
	return r.Associated && r.Lost > 0 && r.AllAcked && r.Error == "" && r.Corrupt == 0 && r.WrongStrm == 0 &&
		closed != nil && (closed.Event == "closed" || closed.Event == "state") && closed.InFlight == 0
}
