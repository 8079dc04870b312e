package sctppeer

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"reflect"
	"testing"
	"time"
)

func TestParseAddrList(t *testing.T) {
	tests := []struct {
		in      string
		want    []netip.Addr
		wantErr bool
	}{
		{"", nil, false},
		{"10.77.2.10", []netip.Addr{netip.MustParseAddr("10.77.2.10")}, false},
		{"10.77.2.10, 10.77.3.10", []netip.Addr{netip.MustParseAddr("10.77.2.10"), netip.MustParseAddr("10.77.3.10")}, false},
		{"fd77:1::2,10.77.1.2", []netip.Addr{netip.MustParseAddr("fd77:1::2"), netip.MustParseAddr("10.77.1.2")}, false},
		{"::ffff:10.1.1.1", []netip.Addr{netip.MustParseAddr("10.1.1.1")}, false},
		{"10.77.2.10,", nil, true},
		{"10.77.2.300", nil, true},
		{"10.0.0.1,10.0.0.1", nil, true},
		{"fe80::1%eth0", nil, true},
		{"host.example", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseAddrList(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if !tc.wantErr && !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestMessageRoundTripDetectsCorruption(t *testing.T) {
	tests := []struct {
		name   string
		seq    uint64
		size   int
		mangle func([]byte) []byte
		wantOK bool
	}{
		{"intact minimum", 0, MinSize, nil, true},
		{"intact large", 1 << 40, 4000, nil, true},
		{"too small is padded", 3, 1, nil, true},
		{"flipped payload byte", 7, 100, func(b []byte) []byte { b[50] ^= 1; return b }, false},
		{"truncated", 7, 100, func(b []byte) []byte { return b[:99] }, false},
		{"shorter than header", 7, 100, func(b []byte) []byte { return b[:5] }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := EncodeMessage(tc.seq, tc.size)
			if tc.mangle != nil {
				b = tc.mangle(b)
			}
			seq, ok := DecodeMessage(b)
			if ok != tc.wantOK {
				t.Fatalf("ok = %v, want %v", ok, tc.wantOK)
			}
			if ok && seq != tc.seq {
				t.Errorf("seq = %d, want %d", seq, tc.seq)
			}
		})
	}
}

func TestSplitEcho(t *testing.T) {
	id, msg, err := SplitEcho(append([]byte("be2\x00"), 1, 0, 2))
	if err != nil || id != "be2" || !bytes.Equal(msg, []byte{1, 0, 2}) {
		t.Fatalf("SplitEcho = %q %v %v", id, msg, err)
	}
	if _, _, err := SplitEcho([]byte("no separator")); err == nil {
		t.Error("accepted an echo without ID")
	}
}

func TestParseResultTakesLastJSONLine(t *testing.T) {
	r, err := ParseResult("noise\n{\"associated\":true,\"sent\":3,\"echoed\":3,\"serverID\":\"be1\"}\n")
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() || r.ServerID != "be1" {
		t.Errorf("result %+v", r)
	}
	if _, err := ParseResult("no json"); err == nil {
		t.Error("accepted output without result")
	}
	if _, err := ParseResult("{broken"); err == nil {
		t.Error("accepted broken JSON")
	}
}

func TestResultOK(t *testing.T) {
	tests := []struct {
		name string
		r    Result
		want bool
	}{
		{"all echoed", Result{Associated: true, Sent: 5, Echoed: 5}, true},
		{"lost one", Result{Associated: true, Sent: 5, Echoed: 4, Lost: 1}, false},
		{"not associated", Result{Sent: 0, Echoed: 0}, false},
		{"corrupt echo", Result{Associated: true, Sent: 5, Echoed: 5, Corrupt: 1}, false},
		{"wrong stream", Result{Associated: true, Sent: 5, Echoed: 5, WrongStrm: 1}, false},
		{"error", Result{Associated: true, Sent: 5, Echoed: 5, Error: "x"}, false},
	}
	for _, tc := range tests {
		if got := tc.r.OK(); got != tc.want {
			t.Errorf("%s: OK() = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func FuzzParseAddrList(f *testing.F) {
	f.Add("10.0.0.1,fd77::1")
	f.Add(",,")
	f.Fuzz(func(t *testing.T, s string) {
		addrs, err := ParseAddrList(s)
		if err != nil {
			return
		}
		again, err := ParseAddrList(FormatAddrList(addrs))
		if err != nil || !reflect.DeepEqual(again, addrs) && len(addrs) > 0 {
			t.Fatalf("round trip of %q: %v %v", s, again, err)
		}
	})
}

func FuzzDecodeMessage(f *testing.F) {
	f.Add(EncodeMessage(1, 20))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		seq, ok := DecodeMessage(b)
		if ok && !bytes.Equal(EncodeMessage(seq, len(b)), b) {
			t.Fatalf("accepted a message EncodeMessage would not produce: %x", b)
		}
	})
}

func TestSummarizeAndManyResultOK(t *testing.T) {
	ok := Result{Associated: true, Sent: 5, Echoed: 5, MaxGapMs: 60, Failovers: 1}
	lost := Result{Associated: true, Sent: 5, Echoed: 3, Lost: 2, MaxGapMs: 900}
	down := Result{Error: "dial: CANT_STR_ASSOC"}
	m := Summarize([]Result{ok, lost, down, ok}, 2*time.Second)
	want := Total{Associations: 4, Associated: 3, OK: 2, Sent: 15, Echoed: 13, Lost: 2, Failovers: 2, Errors: 1, MaxGapMs: 900, ElapsedMs: 2000}
	if m.Total != want {
		t.Errorf("total %+v, want %+v", m.Total, want)
	}
	if m.OK() {
		t.Error("OK with a lossy and a failed association")
	}
	if !Summarize([]Result{ok, ok}, time.Second).OK() {
		t.Error("not OK with every association OK")
	}
	for name, bad := range map[string]ManyResult{
		"none":           Summarize(nil, time.Second),
		"client error":   {Associations: []Result{ok}, Total: Total{Associations: 1, OK: 1}, Error: "--count"},
		"total mismatch": {Associations: []Result{ok}, Total: Total{Associations: 2}},
	} {
		if bad.OK() {
			t.Errorf("%s: OK", name)
		}
	}
}

func TestParseManyResult(t *testing.T) {
	line, err := json.Marshal(Summarize([]Result{{Associated: true, Sent: 2, Echoed: 2, ServerID: "be1"}}, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	m, err := ParseManyResult("noise\n" + string(line) + "\n")
	if err != nil || !m.OK() || m.Associations[0].ServerID != "be1" {
		t.Errorf("parsed %+v %v", m, err)
	}
	m, err = ParseManyResult(`{"associations":[],"total":{"associations":0},"error":"--associations=-1: want 0..4096"}`)
	if err != nil || m.Error == "" || m.OK() {
		t.Errorf("client error line: %+v %v", m, err)
	}
	for _, bad := range []string{
		"",
		"{broken",
		// A one-association Result is not a ManyResult.
		`{"associated":true,"sent":3,"echoed":3}`,
		`{"associations":[{"associated":true}],"total":{"associations":2}}`,
	} {
		if m, err := ParseManyResult(bad); err == nil {
			t.Errorf("%q accepted: %+v", bad, m)
		}
	}
}

func FuzzParseManyResult(f *testing.F) {
	line, _ := json.Marshal(Summarize([]Result{{Associated: true, Sent: 1, Echoed: 1}}, time.Second))
	f.Add(string(line))
	f.Add(`{"associated":true}`)
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseManyResult(s)
		if err != nil {
			return
		}
		if m.Error == "" && len(m.Associations) != m.Total.Associations {
			t.Fatalf("accepted %d associations with a total of %d", len(m.Associations), m.Total.Associations)
		}
	})
}
