package bench

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestUDPDatagramChecksumVerifiesToZero(t *testing.T) {
	cases := []struct {
		name     string
		src, dst string
		sport    uint16
		dport    uint16
		payload  []byte
	}{
		{"empty payload", "10.77.1.2", "10.77.2.11", 20000, 9999, nil},
		{"odd payload length", "10.77.1.2", "10.77.100.1", 65535, 1, []byte{1, 2, 3}},
		{"minimum frame payload", "192.0.2.1", "198.51.100.7", 1024, 9999, make([]byte, 18)},
		{"all ones payload", "255.255.255.255", "0.0.0.0", 0xffff, 0xffff, []byte{0xff, 0xff, 0xff, 0xff}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src, dst := netip.MustParseAddr(c.src), netip.MustParseAddr(c.dst)
			b := UDPDatagram(src, dst, c.sport, c.dport, c.payload)
			if got := binary.BigEndian.Uint16(b[0:]); got != c.sport {
				t.Errorf("source port %d, want %d", got, c.sport)
			}
			if got := binary.BigEndian.Uint16(b[2:]); got != c.dport {
				t.Errorf("destination port %d, want %d", got, c.dport)
			}
			if got := int(binary.BigEndian.Uint16(b[4:])); got != 8+len(c.payload) {
				t.Errorf("length %d, want %d", got, 8+len(c.payload))
			}
			if binary.BigEndian.Uint16(b[6:]) == 0 {
				t.Fatal("checksum 0 means 'no checksum' in IPv4 UDP")
			}
			s, d := src.As4(), dst.As4()
			var sum uint32
			for _, w := range [][]byte{s[:], d[:], {0, 17}, b[4:6], b} {
				sum = onesAdd(sum, w)
			}
			if f := fold(sum); f != 0xffff {
				t.Errorf("checksum over pseudo-header and datagram folds to %#04x, want 0xffff", f)
			}
		})
	}
}

func TestFloodRejectsBadConfigBeforeOpeningASocket(t *testing.T) {
	v4, v6 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")
	cases := []struct {
		name string
		cfg  FloodConfig
		want string
	}{
		{"ipv6", FloodConfig{Src: v6, Dst: v4, Flows: 1, SrcPortBase: 1000, Packets: 1}, "IPv4"},
		{"no flows", FloodConfig{Src: v4, Dst: v4, Flows: 0, SrcPortBase: 1000, Packets: 1}, "flows"},
		{"ports overflow", FloodConfig{Src: v4, Dst: v4, Flows: 2000, SrcPortBase: 65000, Packets: 1}, "flows"},
		{"port zero", FloodConfig{Src: v4, Dst: v4, Flows: 1, SrcPortBase: 0, Packets: 1}, "flows"},
		{"no packets", FloodConfig{Src: v4, Dst: v4, Flows: 1, SrcPortBase: 1000}, "Packets"},
		{"huge payload", FloodConfig{Src: v4, Dst: v4, Flows: 1, SrcPortBase: 1000, Packets: 1, Payload: 9000}, "Payload"},
		{"huge batch", FloodConfig{Src: v4, Dst: v4, Flows: 1, SrcPortBase: 1000, Packets: 1, Batch: 5000}, "Batch"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Flood(c.cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Flood: err %v, want one mentioning %q", err, c.want)
			}
		})
	}
}

func TestParseSchedstat(t *testing.T) {
	cases := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"1016188 231328 6\n", 1016188 * time.Nanosecond, false},
		{"0 0 0", 0, false},
		{"", 0, true},
		{"1 2", 0, true},
		{"1 2 3 4", 0, true},
		{"-1 2 3", 0, true},
		{"x 2 3", 0, true},
		{"18446744073709551615 0 0", 0, true}, // would overflow a Duration
	}
	for _, c := range cases {
		got, err := ParseSchedstat(c.in)
		if (err != nil) != c.wantErr || got != c.want {
			t.Errorf("ParseSchedstat(%q) = %v, %v; want %v, error %v", c.in, got, err, c.want, c.wantErr)
		}
	}
}

func TestParseNftCounter(t *testing.T) {
	const meta = `{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}`
	cases := []struct {
		name    string
		in      string
		want    uint64
		wantErr bool
	}{
		{"one counter", `{"nftables": [` + meta + `, {"counter": {"family": "netdev", "name": "sink", "table": "tlb_bench", "handle": 2, "packets": 199872, "bytes": 9}}]}`, 199872, false},
		{"zero", `{"nftables": [{"counter": {"name": "sink", "packets": 0, "bytes": 0}}]}`, 0, false},
		{"no counter", `{"nftables": [` + meta + `]}`, 0, true},
		{"two counters", `{"nftables": [{"counter": {"name": "a", "packets": 1}}, {"counter": {"name": "b", "packets": 2}}]}`, 0, true},
		{"no packets field", `{"nftables": [{"counter": {"name": "sink", "bytes": 0}}]}`, 0, true},
		{"negative packets", `{"nftables": [{"counter": {"name": "sink", "packets": -1}}]}`, 0, true},
		{"not json", `Error: No such file or directory`, 0, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseNftCounter([]byte(c.in))
			if (err != nil) != c.wantErr || got != c.want {
				t.Errorf("got %d, %v; want %d, error %v", got, err, c.want, c.wantErr)
			}
		})
	}
}

func TestParseIperf3(t *testing.T) {
	cases := []struct {
		name    string
		in      string
		want    float64
		wantErr bool
	}{
		{"receiver rate", `{"start": {}, "intervals": [], "end": {"sum_sent": {"bits_per_second": 2e10}, "sum_received": {"bits_per_second": 1.2e10}}}`, 1.2e10, false},
		{"iperf3 error", `{"start": {}, "end": {}, "error": "unable to connect to server: Connection refused"}`, 0, true},
		{"no receiver sum", `{"end": {"sum_sent": {"bits_per_second": 5}}}`, 0, true},
		{"zero rate", `{"end": {"sum_received": {"bits_per_second": 0}}}`, 0, true},
		{"truncated", `{"end": {"sum_rec`, 0, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseIperf3([]byte(c.in))
			if (err != nil) != c.wantErr || got != c.want {
				t.Errorf("got %g, %v; want %g, error %v", got, err, c.want, c.wantErr)
			}
		})
	}
}

func FuzzParseSchedstat(f *testing.F) {
	for _, s := range []string{"1016188 231328 6\n", "0 0 0", "", "1 2", "x y z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseSchedstat(s)
		if err == nil && d < 0 {
			t.Fatalf("negative run time %v from %q", d, s)
		}
	})
}

func FuzzParseNftCounter(f *testing.F) {
	f.Add([]byte(`{"nftables": [{"counter": {"name": "sink", "packets": 3}}]}`))
	f.Add([]byte(`{"nftables": []}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseNftCounter(b)
	})
}

func FuzzParseIperf3(f *testing.F) {
	f.Add([]byte(`{"end": {"sum_received": {"bits_per_second": 1.2e10}}}`))
	f.Add([]byte(`{"error": "x"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		bps, err := ParseIperf3(b)
		if err == nil && !(bps > 0) {
			t.Fatalf("accepted non-positive rate %g", bps)
		}
	})
}
