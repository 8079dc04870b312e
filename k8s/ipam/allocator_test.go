package ipam

import (
	"errors"
	"math"
	"net/netip"
	"strings"
	"testing"
)

func newAlloc(t *testing.T, flag4, flag6 string) *Allocator {
	t.Helper()
	p4, err := ParsePoolFlag(flag4, IPv4)
	if err != nil {
		t.Fatal(err)
	}
	p6, err := ParsePoolFlag(flag6, IPv6)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Pools: MergePools(p4, p6)})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func tcp(p uint16) Port  { return Port{Protocol: "TCP", Port: p} }
func sctp(p uint16) Port { return Port{Protocol: "SCTP", Port: p} }

// step is one allocator operation in a scripted scenario; exactly one of
// want / wantErr is checked.
type step struct {
	op      string // allocate, assign, release, releaseService
	owner   Owner
	pool    string
	fam     Family
	ip      string
	want    string
	wantErr error
}

func TestAllocatorScenarios(t *testing.T) {
	a1 := Owner{Service: "ns/a", Ports: []Port{tcp(80)}}
	b1 := Owner{Service: "ns/b", Ports: []Port{tcp(80)}}
	shA80 := Owner{Service: "ns/a", SharingKey: "k", Ports: []Port{tcp(80)}}
	shB443 := Owner{Service: "ns/b", SharingKey: "k", Ports: []Port{tcp(443)}}
	shC80 := Owner{Service: "ns/c", SharingKey: "k", Ports: []Port{tcp(80)}}
	shD443other := Owner{Service: "ns/d", SharingKey: "other", Ports: []Port{tcp(443)}}
	shE80udp := Owner{Service: "ns/e", SharingKey: "k", Ports: []Port{{Protocol: "UDP", Port: 80}}}
	tests := []struct {
		name         string
		flag4, flag6 string
		steps        []step
	}{
		{
			name: "exclusive allocations take lowest free address", flag4: "p=10.0.0.1-10.0.0.3",
			steps: []step{
				{op: "allocate", owner: a1, pool: "p", fam: IPv4, want: "10.0.0.1"},
				{op: "allocate", owner: b1, pool: "p", fam: IPv4, want: "10.0.0.2"},
			},
		},
		{
			name: "exhaustion is a typed error and a release frees the address", flag4: "p=10.0.0.1-10.0.0.2",
			steps: []step{
				{op: "allocate", owner: Owner{Service: "s1"}, pool: "p", fam: IPv4, want: "10.0.0.1"},
				{op: "allocate", owner: Owner{Service: "s2"}, pool: "p", fam: IPv4, want: "10.0.0.2"},
				{op: "allocate", owner: Owner{Service: "s3"}, pool: "p", fam: IPv4, wantErr: ErrExhausted},
				{op: "release", owner: Owner{Service: "s1"}, ip: "10.0.0.1"},
				{op: "allocate", owner: Owner{Service: "s3"}, pool: "p", fam: IPv4, want: "10.0.0.1"},
			},
		},
		{
			name: "one service gets distinct addresses for secondaries", flag4: "p=10.0.0.1-10.0.0.2",
			steps: []step{
				{op: "allocate", owner: shA80, pool: "p", fam: IPv4, want: "10.0.0.1"},
				{op: "allocate", owner: shA80, pool: "p", fam: IPv4, want: "10.0.0.2"},
				{op: "allocate", owner: shA80, pool: "p", fam: IPv4, wantErr: ErrExhausted},
			},
		},
		{
			name: "same sharing key without port clash shares the address", flag4: "p=10.0.0.1-10.0.0.5",
			steps: []step{
				{op: "allocate", owner: shA80, pool: "p", fam: IPv4, want: "10.0.0.1"},
				{op: "allocate", owner: shB443, pool: "p", fam: IPv4, want: "10.0.0.1"},
			},
		},
		{
			name: "same sharing key with port clash gets another address", flag4: "p=10.0.0.1-10.0.0.5",
			steps: []step{
				{op: "allocate", owner: shA80, pool: "p", fam: IPv4, want: "10.0.0.1"},
				{op: "allocate", owner: shC80, pool: "p", fam: IPv4, want: "10.0.0.2"},
			},
		},
		{
			name: "same port number on another protocol does not clash", flag4: "p=10.0.0.1-10.0.0.5",
			steps: []step{
				{op: "allocate", owner: shA80, pool: "p", fam: IPv4, want: "10.0.0.1"},
				{op: "allocate", owner: shE80udp, pool: "p", fam: IPv4, want: "10.0.0.1"},
			},
		},
		{
			name: "different sharing keys never share", flag4: "p=10.0.0.1-10.0.0.5",
			steps: []step{
				{op: "allocate", owner: shA80, pool: "p", fam: IPv4, want: "10.0.0.1"},
				{op: "allocate", owner: shD443other, pool: "p", fam: IPv4, want: "10.0.0.2"},
				{op: "assign", owner: shD443other, ip: "10.0.0.1", wantErr: ErrConflict},
			},
		},
		{
			name: "sharing with an exclusive holder is refused", flag4: "p=10.0.0.1-10.0.0.5",
			steps: []step{
				{op: "allocate", owner: a1, pool: "p", fam: IPv4, want: "10.0.0.1"},
				{op: "allocate", owner: shB443, pool: "p", fam: IPv4, want: "10.0.0.2"},
				{op: "assign", owner: shB443, ip: "10.0.0.1", wantErr: ErrConflict},
				{op: "assign", owner: Owner{Service: "ns/x", Ports: []Port{tcp(1)}}, ip: "10.0.0.2", wantErr: ErrConflict},
			},
		},
		{
			name: "shared pool exhausted for a clashing sharer", flag4: "p=10.0.0.1",
			steps: []step{
				{op: "allocate", owner: shA80, pool: "p", fam: IPv4, want: "10.0.0.1"},
				{op: "allocate", owner: shB443, pool: "p", fam: IPv4, want: "10.0.0.1"},
				{op: "allocate", owner: shC80, pool: "p", fam: IPv4, wantErr: ErrExhausted},
				{op: "release", owner: shA80, ip: "10.0.0.1"},
				{op: "allocate", owner: shC80, pool: "p", fam: IPv4, want: "10.0.0.1"},
			},
		},
		{
			name: "local traffic policy sharers must select the same pods", flag4: "p=10.0.0.1-10.0.0.3",
			steps: []step{
				{op: "allocate", owner: Owner{Service: "a", SharingKey: "k", BackendKey: "app=x", Ports: []Port{tcp(1)}}, pool: "p", fam: IPv4, want: "10.0.0.1"},
				{op: "allocate", owner: Owner{Service: "b", SharingKey: "k", BackendKey: "app=y", Ports: []Port{tcp(2)}}, pool: "p", fam: IPv4, want: "10.0.0.2"},
				{op: "allocate", owner: Owner{Service: "c", SharingKey: "k", BackendKey: "app=x", Ports: []Port{tcp(3)}}, pool: "p", fam: IPv4, want: "10.0.0.1"},
			},
		},
		{
			name: "static address outside every pool", flag4: "p=10.0.0.1-10.0.0.3",
			steps: []step{
				{op: "assign", owner: a1, ip: "192.168.255.254"},
				{op: "assign", owner: b1, ip: "192.168.255.254", wantErr: ErrConflict},
				{op: "allocate", owner: b1, pool: "p", fam: IPv4, want: "10.0.0.1"},
			},
		},
		{
			name: "assigned address inside a pool is skipped by allocation", flag4: "p=10.0.0.1-10.0.0.3",
			steps: []step{
				{op: "assign", owner: a1, ip: "10.0.0.1"},
				{op: "assign", owner: a1, ip: "10.0.0.1"},
				{op: "allocate", owner: b1, pool: "p", fam: IPv4, want: "10.0.0.2"},
			},
		},
		{
			name: "reassigning own address with new clashing ports is refused", flag4: "p=10.0.0.1-10.0.0.3",
			steps: []step{
				{op: "allocate", owner: shA80, pool: "p", fam: IPv4, want: "10.0.0.1"},
				{op: "allocate", owner: shB443, pool: "p", fam: IPv4, want: "10.0.0.1"},
				{op: "assign", owner: Owner{Service: "ns/b", SharingKey: "k", Ports: []Port{tcp(80)}}, ip: "10.0.0.1", wantErr: ErrConflict},
			},
		},
		{
			name: "dual-stack pool hands out each family", flag4: "p=10.0.0.1-10.0.0.2", flag6: "p=2001:db8::/127",
			steps: []step{
				{op: "allocate", owner: a1, pool: "p", fam: IPv6, want: "2001:db8::"},
				{op: "allocate", owner: a1, pool: "p", fam: IPv4, want: "10.0.0.1"},
				{op: "allocate", owner: b1, pool: "p", fam: IPv6, want: "2001:db8::1"},
				{op: "allocate", owner: Owner{Service: "c"}, pool: "p", fam: IPv6, wantErr: ErrExhausted},
			},
		},
		{
			name: "unknown pool and missing family", flag4: "p=10.0.0.1",
			steps: []step{
				{op: "allocate", owner: a1, pool: "nope", fam: IPv4, wantErr: ErrUnknownPool},
				{op: "allocate", owner: a1, pool: "p", fam: IPv6, wantErr: errAny},
			},
		},
		{
			name: "release service frees all of its addresses", flag4: "p=10.0.0.1-10.0.0.2",
			steps: []step{
				{op: "allocate", owner: a1, pool: "p", fam: IPv4, want: "10.0.0.1"},
				{op: "allocate", owner: a1, pool: "p", fam: IPv4, want: "10.0.0.2"},
				{op: "releaseService", owner: a1},
				{op: "allocate", owner: b1, pool: "p", fam: IPv4, want: "10.0.0.1"},
			},
		},
		{
			name: "huge IPv6 pool allocates without walking it", flag6: "p=2001:db8::/64",
			steps: []step{
				{op: "allocate", owner: a1, pool: "p", fam: IPv6, want: "2001:db8::1"},
				{op: "allocate", owner: b1, pool: "p", fam: IPv6, want: "2001:db8::2"},
			},
		},
		{
			name: "empty service key is rejected", flag4: "p=10.0.0.1",
			steps: []step{
				{op: "allocate", owner: Owner{}, pool: "p", fam: IPv4, wantErr: errAny},
				{op: "assign", owner: Owner{}, ip: "10.0.0.1", wantErr: errAny},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAlloc(t, tt.flag4, tt.flag6)
			for i, s := range tt.steps {
				var got netip.Addr
				var err error
				switch s.op {
				case "allocate":
					got, err = a.Allocate(s.owner, s.pool, s.fam)
				case "assign":
					err = a.Assign(s.owner, netip.MustParseAddr(s.ip))
				case "release":
					if !a.Release(s.owner.Service, netip.MustParseAddr(s.ip)) {
						t.Fatalf("step %d: release of %s by %s found no hold", i, s.ip, s.owner.Service)
					}
				case "releaseService":
					if len(a.ReleaseService(s.owner.Service)) == 0 {
						t.Fatalf("step %d: nothing released", i)
					}
				}
				switch {
				case s.wantErr == errAny:
					if err == nil {
						t.Fatalf("step %d (%s): want an error, got %v", i, s.op, got)
					}
				case s.wantErr != nil:
					if !errors.Is(err, s.wantErr) {
						t.Fatalf("step %d (%s): err = %v, want %v", i, s.op, err, s.wantErr)
					}
				case err != nil:
					t.Fatalf("step %d (%s): %v", i, s.op, err)
				case s.want != "" && got.String() != s.want:
					t.Fatalf("step %d (%s): got %s, want %s", i, s.op, got, s.want)
				}
			}
		})
	}
}

var errAny = errors.New("any error")

func TestExhaustedErrorNamesPoolAndFamily(t *testing.T) {
	a := newAlloc(t, "tiny=10.0.0.1", "")
	if _, err := a.Allocate(Owner{Service: "a"}, "tiny", IPv4); err != nil {
		t.Fatal(err)
	}
	_, err := a.Allocate(Owner{Service: "b"}, "tiny", IPv4)
	var ex *ExhaustedError
	if !errors.As(err, &ex) || ex.Pool != "tiny" || ex.Family != IPv4 {
		t.Fatalf("err = %#v", err)
	}
	if err.Error() != `pool "tiny" has no free IPv4 address` {
		t.Fatalf("message = %q", err.Error())
	}
}

func TestConflictErrorNamesHolder(t *testing.T) {
	a := newAlloc(t, "p=10.0.0.1", "")
	if err := a.Assign(Owner{Service: "ns/a", SharingKey: "k", Ports: []Port{sctp(38412)}}, netip.MustParseAddr("10.0.0.1")); err != nil {
		t.Fatal(err)
	}
	err := a.Assign(Owner{Service: "ns/b", SharingKey: "k", Ports: []Port{sctp(38412)}}, netip.MustParseAddr("10.0.0.1"))
	var c *ConflictError
	if !errors.As(err, &c) || c.Holder != "ns/a" || c.Reason != "port clash on 38412/SCTP" {
		t.Fatalf("err = %#v", err)
	}
}

func TestStatsCountSizeAndUsePerFamily(t *testing.T) {
	a := newAlloc(t, "a=10.0.0.0/24,b=10.1.0.1-10.1.0.4", "a=2001:db8::/64,big=2001:db9::/32")
	for _, s := range []string{"x", "y"} {
		if _, err := a.Allocate(Owner{Service: s}, "b", IPv4); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.Allocate(Owner{Service: "x"}, "a", IPv6); err != nil {
		t.Fatal(err)
	}
	// Outside every pool: not counted anywhere.
	if err := a.Assign(Owner{Service: "z"}, netip.MustParseAddr("192.0.2.1")); err != nil {
		t.Fatal(err)
	}
	want := []PoolStats{
		{Pool: "a", Family: IPv4, Size: 254, InUse: 0},
		{Pool: "a", Family: IPv6, Size: math.MaxUint64, InUse: 1},
		{Pool: "b", Family: IPv4, Size: 4, InUse: 2},
		{Pool: "big", Family: IPv6, Size: math.MaxUint64, InUse: 0},
	}
	got := a.Stats()
	if len(got) != len(want) {
		t.Fatalf("stats = %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("stats[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
	// A /64 less its all-zeros address is 2^64-1 addresses, exactly
	// MaxUint64; a /32 saturates; a /65 is 2^63-1.
	b := newAlloc(t, "", "h=2001:db8::/65")
	if s := b.Stats()[0].Size; s != 1<<63-1 {
		t.Fatalf("/65 size = %d", s)
	}
}

func TestReservationThenAllocationNeverDuplicates(t *testing.T) {
	a := newAlloc(t, "p=10.0.0.1-10.0.0.10", "")
	// Recorded allocations from a previous run, reserved before anything new.
	recorded := map[string]string{"ns/s3": "10.0.0.3", "ns/s1": "10.0.0.1", "ns/s7": "10.0.0.7"}
	for svc, ip := range recorded {
		if err := a.Assign(Owner{Service: svc}, netip.MustParseAddr(ip)); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for _, ip := range recorded {
		seen[ip] = true
	}
	for i := 0; i < 7; i++ {
		got, err := a.Allocate(Owner{Service: "new" + string(rune('a'+i))}, "p", IPv4)
		if err != nil {
			t.Fatal(err)
		}
		if seen[got.String()] {
			t.Fatalf("duplicate %s", got)
		}
		seen[got.String()] = true
	}
	if _, err := a.Allocate(Owner{Service: "one-too-many"}, "p", IPv4); !errors.Is(err, ErrExhausted) {
		t.Fatalf("err = %v", err)
	}
	if h := a.Holders(netip.MustParseAddr("10.0.0.3")); len(h) != 1 || h[0] != "ns/s3" {
		t.Fatalf("holders = %v", h)
	}
	if name, ok := a.PoolOf(netip.MustParseAddr("10.0.0.3")); !ok || name != "p" {
		t.Fatalf("PoolOf = %q %v", name, ok)
	}
	if len(a.Services()) != 10 {
		t.Fatalf("services = %v", a.Services())
	}
}

// Allocation always takes the lowest free address, also after releases below
// and above the previous allocations and after exhaustion.
func TestAllocateTakesTheLowestFreeAddressAfterReleases(t *testing.T) {
	a := newAlloc(t, "p=10.0.0.1-10.0.0.4", "")
	alloc := func(svc string) string {
		t.Helper()
		got, err := a.Allocate(Owner{Service: svc}, "p", IPv4)
		if err != nil {
			return err.Error()
		}
		return got.String()
	}
	steps := []struct {
		release string // service released before allocating, "" for none
		svc     string
		want    string
	}{
		{"", "a", "10.0.0.1"},
		{"", "b", "10.0.0.2"},
		{"", "c", "10.0.0.3"},
		{"a", "d", "10.0.0.1"},
		{"", "e", "10.0.0.4"},
		{"", "f", `pool "p" has no free IPv4 address`},
		{"c", "g", "10.0.0.3"},
		{"b", "h", "10.0.0.2"},
	}
	for i, s := range steps {
		if s.release != "" {
			a.ReleaseService(s.release)
		}
		if got := alloc(s.svc); !strings.Contains(got, s.want) {
			t.Fatalf("step %d (%s): got %q, want %q", i, s.svc, got, s.want)
		}
	}
}
