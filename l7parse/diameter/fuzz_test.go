package diameter

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzParse feeds arbitrary bytes (seeded with go-diameter's and
// freeDiameter's messages) to Parse. It must never panic; what it accepts
// must survive the agent's edits (hop-by-hop, T flag, Route-Record) with
// every other byte and every routing key unchanged; what it refuses must be
// a *Error whose answer, when there is one, parses.
func FuzzParse(f *testing.F) {
	for _, s := range godiameterSamples(f) {
		f.Add(s.b)
	}
	for _, b := range foreignSamples(f) {
		f.Add(b)
	}
	id := Identity{"agent.example.org", "example.org"}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is not a *Error", err)
			}
			if ans, ok := ErrorAnswer(b, e, id); ok {
				if _, err := Parse(ans); err != nil {
					t.Fatalf("error answer does not parse: %v", err)
				}
			}
			return
		}
		e := append([]byte(nil), b...)
		SetHopByHop(e, ^m.HopByHop)
		if m.IsRequest() {
			SetRetransmit(e)
		}
		e = AppendAVP(e, RouteRecord(id.Host))
		m2, err := Parse(e)
		if err != nil {
			t.Fatalf("edited message does not parse: %v", err)
		}
		if m2.HopByHop != ^m.HopByHop || m2.RouteRecords != m.RouteRecords+1 || !m2.HasRouteRecord(id.Host) ||
			!bytes.Equal(m2.SessionID, m.SessionID) || !bytes.Equal(m2.DestHost, m.DestHost) ||
			!bytes.Equal(m2.DestRealm, m.DestRealm) || m2.Result() != m.Result() || m2.Code != m.Code {
			t.Fatalf("edit changed the keys: %+v -> %+v", m, m2)
		}
		if !bytes.Equal(e[HeaderLen:len(b)], b[HeaderLen:]) {
			t.Fatal("edit changed the AVPs")
		}
		if m.IsRequest() {
			a := Answer(m.Header, m.SessionID, id, UnableToDeliver)
			if _, err := Parse(a); err != nil {
				t.Fatalf("answer does not parse: %v", err)
			}
		}
	})
}
