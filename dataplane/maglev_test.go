package dataplane

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// The pure maglev table builder. Invariants checked on every table built
// here (checkMaglevTable): every entry names an up endpoint of the list; an
// up endpoint of weight w holds a share of the entries proportional to w
// (equal weights: floor or ceil of m/n entries each); the table depends on
// the set of endpoints, not their order.

// hashTupleGo is lib/helpers.h hash_tuple(p, 0) for a packet from src:sport
// to dst:dport (ports as on the wire): the datapath's maglev key.
func hashTupleGo(src, dst netip.Addr, sport, dport uint16, proto uint8) uint32 {
	word := func(a netip.Addr, i int) uint32 {
		b := addr16(a)
		return binary.LittleEndian.Uint32(b[i*4:])
	}
	fold := func(a netip.Addr) uint32 { return word(a, 0) ^ word(a, 1) ^ word(a, 2) ^ word(a, 3) }
	h := uint32(0x9e3779b9)
	h ^= fold(src)
	h *= 0x85ebca6b
	h ^= fold(dst)
	h *= 0xc2b2ae35
	// p->sport and p->dport hold network order, read as little-endian words.
	h ^= uint32(htons(sport))<<16 | uint32(htons(dport))
	h *= 0x85ebca6b
	h ^= uint32(proto)
	h ^= h >> 16
	h *= 0x7feb352d
	h ^= h >> 15
	h *= 0x846ca68b
	h ^= h >> 16
	return h
}

type tuple struct {
	src          netip.Addr
	sport, dport uint16
}

func randomTuples(n int, seed uint64) []tuple {
	r := rand.New(rand.NewPCG(seed, 1))
	ts := make([]tuple, n)
	for i := range ts {
		ts[i] = tuple{netip.AddrFrom4([4]byte{10, byte(r.IntN(256)), byte(r.IntN(256)), byte(1 + r.IntN(254))}),
			uint16(1024 + r.IntN(60000)), 80}
	}
	return ts
}

func maglevEndpoints(n int) []Endpoint {
	eps := make([]Endpoint, n)
	for i := range eps {
		eps[i] = Endpoint{Addr: netip.AddrFrom4([4]byte{10, 20, byte(i / 200), byte(1 + i%200)}), Port: 8080, Weight: 1}
	}
	return eps
}

func checkMaglevTable(t *testing.T, eps []Endpoint, tab []uint8) {
	t.Helper()
	counts := make([]int, len(eps))
	totalW := 0
	for _, e := range eps {
		if !e.Down {
			totalW += int(max(e.Weight, 1))
		}
	}
	for i, x := range tab {
		if int(x) >= len(eps) || eps[x].Down {
			t.Fatalf("entry %d names endpoint %d, not an up endpoint of %d", i, x, len(eps))
		}
		counts[x]++
	}
	for i, e := range eps {
		if e.Down {
			continue
		}
		want := float64(len(tab)) * float64(max(e.Weight, 1)) / float64(totalW)
		// Equal weights: within one entry. Weighted: the turn-taking
		// rounds leave at most one turn per round of slack per endpoint.
		if d := float64(counts[i]) - want; d > 1+want*0.01 || d < -1-want*0.01 {
			t.Fatalf("endpoint %d (weight %d) holds %d entries, want about %.1f", i, e.Weight, counts[i], want)
		}
	}
}

// chosen is the address each tuple's new flow goes to.
func chosen(eps []Endpoint, tab []uint8, ts []tuple, vip netip.Addr) []netip.Addr {
	out := make([]netip.Addr, len(ts))
	for i, tu := range ts {
		out[i] = eps[tab[hashTupleGo(tu.src, vip, tu.sport, tu.dport, 17)%uint32(len(tab))]].Addr
	}
	return out
}

func TestMaglevTable(t *testing.T) {
	for _, tc := range []struct {
		name string
		eps  []Endpoint
		m    int
	}{
		{"one endpoint", maglevEndpoints(1), 251},
		{"ten endpoints", maglevEndpoints(10), MaglevTableSize},
		{"64 endpoints", maglevEndpoints(64), MaglevTableSize},
		{"small prime", maglevEndpoints(7), 101},
		{"some down", func() []Endpoint {
			e := maglevEndpoints(8)
			e[0].Down, e[5].Down = true, true
			return e
		}(), MaglevTableSize},
		{"weights 1 2 4", func() []Endpoint {
			e := maglevEndpoints(3)
			e[1].Weight, e[2].Weight = 2, 4
			return e
		}(), MaglevTableSize},
		{"weight 0 counts as 1", func() []Endpoint {
			e := maglevEndpoints(3)
			e[0].Weight = 0
			return e
		}(), MaglevTableSize},
		{"ipv6 and ports", []Endpoint{
			{Addr: netip.MustParseAddr("fd01::10"), Port: 80, Weight: 1},
			{Addr: netip.MustParseAddr("fd01::10"), Port: 81, Weight: 1},
			{Addr: netip.MustParseAddr("fd01::11"), Port: 80, Weight: 3},
		}, MaglevTableSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab := maglevTable(tc.eps, tc.m)
			if len(tab) != tc.m {
				t.Fatalf("%d entries, want %d", len(tab), tc.m)
			}
			checkMaglevTable(t, tc.eps, tab)
			// The order of the list does not matter: reversed, every entry
			// names the same endpoint.
			rev := make([]Endpoint, len(tc.eps))
			for i, e := range tc.eps {
				rev[len(rev)-1-i] = e
			}
			rt := maglevTable(rev, tc.m)
			for i := range tab {
				if tc.eps[tab[i]] != rev[rt[i]] {
					t.Fatalf("entry %d: %v in list order, %v reversed", i, tc.eps[tab[i]], rev[rt[i]])
				}
			}
		})
	}
	all := maglevEndpoints(3)
	for i := range all {
		all[i].Down = true
	}
	if tab := maglevTable(all, 251); tab != nil {
		t.Fatalf("no endpoint up: got a table of %d entries", len(tab))
	}
	if tab := maglevTable(nil, 251); tab != nil {
		t.Fatalf("no endpoints: got a table of %d entries", len(tab))
	}
}

// movedFraction is the share of flows (given by their table entry) whose
// endpoint differs between two endpoint sets.
func movedFraction(before, after []Endpoint, entries []uint32) float64 {
	a, b := maglevTable(before, MaglevTableSize), maglevTable(after, MaglevTableSize)
	moved := 0
	for _, e := range entries {
		if before[a[e]] != after[b[e]] {
			moved++
		}
	}
	return float64(moved) / float64(len(entries))
}

// TestMaglevRemovalMovesFewFlows: removing (or marking down) 1 of N
// endpoints moves at most 1/N + 1% of 100,000 flows, for every endpoint
// removed; adding one back moves them back.
func TestMaglevRemovalMovesFewFlows(t *testing.T) {
	ts := randomTuples(100000, 13)
	vip := netip.MustParseAddr("10.9.0.1")
	entries := make([]uint32, len(ts))
	for i, tu := range ts {
		entries[i] = hashTupleGo(tu.src, vip, tu.sport, tu.dport, 17) % uint32(MaglevTableSize)
	}
	for _, n := range []int{10, 3, 64} {
		eps := maglevEndpoints(n)
		bound := 1/float64(n) + 0.01
		worst := 0.0
		// Every endpoint for n = 10; a sample of them for the others.
		for gone := 0; gone < n; gone += max(1, n/8) {
			removed := append(append([]Endpoint(nil), eps[:gone]...), eps[gone+1:]...)
			down := append([]Endpoint(nil), eps...)
			down[gone].Down = true
			for name, after := range map[string][]Endpoint{"removed": removed, "down": down} {
				f := movedFraction(eps, after, entries)
				worst = max(worst, f)
				if f > bound {
					t.Fatalf("%d endpoints, endpoint %d %s: %.2f%% of flows moved, want <= %.2f%%", n, gone, name, 100*f, 100*bound)
				}
			}
		}
		t.Logf("%d endpoints: worst removal moved %.2f%% of flows (bound %.2f%%)", n, 100*worst, 100*bound)
	}
}

// The slot table of rr/hash moves far more: the contrast the test above
// relies on being a property of maglev, not of the tuples.
func TestSlotTableHashMovesManyFlows(t *testing.T) {
	ts := randomTuples(20000, 5)
	eps := maglevEndpoints(10)
	pick := func(eps []Endpoint) []netip.Addr {
		sel := selectionTable(eps)
		out := make([]netip.Addr, len(ts))
		for i, tu := range ts {
			out[i] = eps[sel.Slot[hashTupleGo(tu.src, vipV4, tu.sport, tu.dport, 17)&(uint32(len(sel.Slot))-1)]].Addr
		}
		return out
	}
	a, b := pick(eps), pick(eps[1:])
	moved := 0
	for i := range a {
		if a[i] != b[i] {
			moved++
		}
	}
	if f := float64(moved) / float64(len(ts)); f <= 0.11 {
		t.Fatalf("slot table moved only %.2f%% of flows: the maglev bound tests nothing", 100*f)
	}
}
