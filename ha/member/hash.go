package member

import (
	"hash/fnv"
	"net/netip"
)

// score is the rendezvous (highest random weight) hash of a member for a
// VIP: the owner is the eligible member with the highest score. A member
// joining or leaving moves only the VIPs it wins or held, so unrelated nodes
// coming and going never move a VIP between two others.
func score(member string, vip netip.Addr) uint64 {
	h := fnv.New64a()
	h.Write([]byte(member))
	h.Write([]byte{0})
	b := vip.As16()
	h.Write(b[:])
	// FNV alone mixes the last bytes poorly; a splitmix64 finaliser spreads
	// VIPs that differ in their last octet evenly over the members.
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// pickOwner returns the member of candidates with the highest score for vip,
// ties broken by the smaller name, or "" when candidates is empty.
func pickOwner(candidates []string, vip netip.Addr) string {
	best, bestScore := "", uint64(0)
	for _, c := range candidates {
		s := score(c, vip)
		if best == "" || s > bestScore || (s == bestScore && c < best) {
			best, bestScore = c, s
		}
	}
	return best
}

// Owner returns which of members owns vip when exactly those members are
// eligible ("" for none): the rendezvous choice every member makes. Tests
// and status pages use it to predict owners.
func Owner(members []string, vip netip.Addr) string { return pickOwner(members, vip.Unmap()) }
