package ngap

import (
	"bytes"
	"errors"
	"testing"
)

func TestKeyFastPathMatchesFullDecode(t *testing.T) {
	d := NewDecoder(DecoderConfig{})
	for _, s := range samplePDUs(t) {
		t.Run(s.name, func(t *testing.T) {
			k, err := peek(s.pdu)
			if err != nil {
				t.Fatalf("fast path: %v", err)
			}
			if steeringOnly(k) != s.want {
				t.Errorf("fast key\n got %+v\nwant %+v", k, s.want)
			}
			if k2, err := d.Key(s.pdu); err != nil || k2 != k {
				t.Errorf("Decoder.Key = %+v, %v", k2, err)
			}
		})
	}
}

func TestKeyRejectsTruncatedPDUs(t *testing.T) {
	must := mustFn(t)
	full := must(UplinkNASTransport(1<<40-1, 9, nil, testLoc))
	d := NewDecoder(DecoderConfig{})
	for n := 0; n < len(full); n++ {
		if _, err := d.Key(full[:n]); !errors.Is(err, ErrMalformed) {
			t.Fatalf("prefix of %d bytes: err = %v, want ErrMalformed", n, err)
		}
	}
	if st := d.Stats(); st.Malformed != uint64(len(full)) {
		t.Errorf("malformed count = %d, want %d", st.Malformed, len(full))
	}
}

// FuzzKeyMatchesDecode is a differential fuzz target: whenever free5gc
// decodes a PDU, the fast path must either defer to it or agree with it.
func FuzzKeyMatchesDecode(f *testing.F) {
	for _, s := range samplePDUs(f) {
		f.Add(s.pdu)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fast, ferr := peek(b)
		full, pdu, derr := Decode(b)
		if ferr != nil && !errors.Is(ferr, errNotFast) && !errors.Is(ferr, ErrMalformed) {
			t.Fatalf("fast path error %v wraps neither ErrMalformed nor errNotFast", ferr)
		}
		if derr != nil {
			return
		}
		// free5gc also accepts non-canonical input (truncated lists, set
		// padding bits) and then silently drops IEs; the oracle only counts
		// for PDUs that re-encode to the very same bytes.
		if re, err := Encode(pdu); err != nil || !bytes.Equal(re, b) {
			return
		}
		if ferr != nil {
			if !errors.Is(ferr, errNotFast) {
				t.Fatalf("fast path rejects a canonical PDU: %v (key %+v)", ferr, full)
			}
			return
		}
		if fast != full {
			t.Fatalf("fast key %+v\n     full key %+v", fast, full)
		}
	})
}

func BenchmarkKeyUplinkNAS(b *testing.B) {
	pdu, err := UplinkNASTransport(1<<39, 7, nil, testLoc)
	if err != nil {
		b.Fatal(err)
	}
	d := NewDecoder(DecoderConfig{})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.Key(pdu); err != nil {
			b.Fatal(err)
		}
	}
}
