package member

import (
	"bytes"
	"errors"
	"testing"
)

func TestHeartbeatRoundTrip(t *testing.T) {
	h := Heartbeat{Version: 1, Ready: true, IntervalMs: 100, Incarnation: 1<<63 + 5, Seq: 42, Name: "node-a"}
	b, err := h.Marshal(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{'T', 'L', 'B', 'H', 1, 1, 0, 100, 0x80, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 42, 6, 'n', 'o', 'd', 'e', '-', 'a'}
	if !bytes.Equal(b, want) {
		t.Fatalf("wire\n got %x\nwant %x", b, want)
	}
	got, err := Unmarshal(b)
	if err != nil || got != h {
		t.Fatalf("Unmarshal = %+v, %v; want %+v", got, err, h)
	}
}

func TestHeartbeatBad(t *testing.T) {
	good, _ := Heartbeat{IntervalMs: 100, Incarnation: 1, Seq: 1, Name: "a"}.Marshal(nil)
	v2 := append(bytes.Clone(good), 0xde, 0xad) // a later version may append fields
	v2[4] = 2
	if h, err := Unmarshal(v2); err != nil || h.Name != "a" || h.Version != 2 {
		t.Errorf("version 2 with trailing fields: %+v, %v", h, err)
	}
	for _, c := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"short", good[:10], ErrShort},
		{"magic", append([]byte("XLBH"), good[4:]...), ErrMagic},
		{"version 0", func() []byte { b := bytes.Clone(good); b[4] = 0; return b }(), ErrVersion},
		{"name length 0", func() []byte { b := bytes.Clone(good); b[24] = 0; return b }(), ErrName},
		{"name past end", func() []byte { b := bytes.Clone(good); b[24] = 9; return b }(), ErrShort},
	} {
		if _, err := Unmarshal(c.b); !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
		}
	}
	if _, err := Unmarshal(append(bytes.Clone(good), 0)); err == nil {
		t.Error("version 1 with a trailing byte accepted")
	}
	if _, err := (Heartbeat{}).Marshal(nil); !errors.Is(err, ErrName) {
		t.Errorf("empty name marshalled: %v", err)
	}
}

// FuzzHeartbeat: any input either fails to parse or parses to a heartbeat
// that marshals back to the same bytes (version 1) and never panics.
func FuzzHeartbeat(f *testing.F) {
	good, _ := Heartbeat{Ready: true, IntervalMs: 100, Incarnation: 7, Seq: 9, Name: "node-b"}.Marshal(nil)
	f.Add(good)
	f.Add([]byte("TLBH"))
	f.Add(append(append([]byte(nil), good[:4]...), 2, 0, 0, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := Unmarshal(b)
		if err != nil {
			return
		}
		if h.Version != 1 {
			return
		}
		// Unknown flag bits are dropped on the way back: compare without them.
		in := bytes.Clone(b)
		in[5] &= knownFlagsMask
		out, err := h.Marshal(nil)
		if err != nil {
			t.Fatalf("parsed %+v does not marshal: %v", h, err)
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("round trip\n in %x\nout %x", in, out)
		}
	})
}
