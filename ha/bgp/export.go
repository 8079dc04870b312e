package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"

	gapi "github.com/osrg/gobgp/v3/api"

	"github.com/telcolb/telcolb/api"
)

// Per-peer export (an advertisement whose peers name only some of the BGP
// peers).
//
// gobgp applies export policies globally (per-neighbor policies exist only
// for route-server clients), so the choice of peers travels with the path:
// a restricted path carries one marker large community per peer it may go
// to, and a global export policy, per peer, accepts a marked path for that
// peer only if it carries the peer's marker (removing every marker before
// the path leaves), and rejects any other marked path. Unmarked paths (no
// restriction) fall through to the default, accept.
//
// Why markers and not a prefix set per peer: gobgp decides whether to send
// a withdrawal by evaluating the policy in force on the old path, and a soft
// reset out never withdraws what the policy now rejects. With the choice
// carried by the path, changing an advertisement's peers is a path replace:
// gobgp evaluates the old path (old markers) and the new one (new markers)
// per peer, and sends an update to the peers that keep or gain the VIP and
// a withdrawal to the ones that lose it. No session is reset.

// MarkerLocalData1 is the middle value of the marker large communities
// ("tlb\0"); api validation refuses it in user communities.
const MarkerLocalData1 = api.ReservedLargeCommunityLocalData1

const (
	exportPolicyName = "telcolb-export"
	markerSetAny     = "telcolb-marker-any"
)

// marker is the large community that lets a restricted path go to the peer
// at index i of the configuration (the configuration changes only in
// Restart, which defines the policy again and re-adds every route with the
// new configuration's markers).
func (s *Speaker) marker(i int) [3]uint32 {
	return [3]uint32{s.cfg.ASN, MarkerLocalData1, uint32(i + 1)}
}

// markers returns the marker communities for adv, nil when it goes to every
// peer (naming every peer is the same as naming none); ok is false when adv
// names peers and none of them is configured.
func (s *Speaker) markers(adv api.Advertisement) (out [][3]uint32, ok bool) {
	if len(adv.Peers) == 0 {
		return nil, true
	}
	named := map[string]bool{}
	for _, p := range adv.Peers {
		named[p] = true
	}
	for i, p := range s.cfg.Peers {
		if named[p.Name] {
			out = append(out, s.marker(i))
		}
	}
	if len(out) == 0 {
		return nil, false
	}
	if len(out) == len(s.cfg.Peers) {
		return nil, true
	}
	return out, true
}

// allowed reports whether a path of adv goes to the peer named name.
func allowed(adv api.Advertisement, name string) bool {
	if len(adv.Peers) == 0 {
		return true
	}
	for _, p := range adv.Peers {
		if p == name {
			return true
		}
	}
	return false
}

// installExportPolicy defines the marker sets and the global export policy.
// It runs at each start, after StartBgp (which resets gobgp's policies) and
// before any peer is added, so no path ever leaves unfiltered.
func (s *Speaker) installExportPolicy(ctx context.Context) error {
	if len(s.cfg.Peers) < 2 {
		return nil // one peer: every advertisement goes to all peers
	}
	asn := strconv.FormatUint(uint64(s.cfg.ASN), 10)
	ld1 := strconv.FormatUint(uint64(MarkerLocalData1), 10)
	anyMarker := "^" + asn + ":" + ld1 + ":[0-9]+$"
	sets := []*gapi.DefinedSet{{DefinedType: gapi.DefinedType_LARGE_COMMUNITY, Name: markerSetAny, List: []string{anyMarker}}}
	var stmts []*gapi.Statement
	for i, p := range s.cfg.Peers {
		m := s.marker(i)
		nset, mset := fmt.Sprintf("telcolb-peer-%d", i), fmt.Sprintf("telcolb-marker-%d", i)
		addr, err := netip.ParseAddr(p.Address)
		if err != nil {
			return fmt.Errorf("bgp: peer %s address: %w", p.Name, err)
		}
		addr = addr.Unmap()
		sets = append(sets,
			&gapi.DefinedSet{DefinedType: gapi.DefinedType_NEIGHBOR, Name: nset, List: []string{netip.PrefixFrom(addr, addr.BitLen()).String()}},
			&gapi.DefinedSet{DefinedType: gapi.DefinedType_LARGE_COMMUNITY, Name: mset, List: []string{fmt.Sprintf("^%d:%d:%d$", m[0], m[1], m[2])}},
		)
		stmts = append(stmts,
			&gapi.Statement{
				Name: fmt.Sprintf("telcolb-to-%d", i),
				Conditions: &gapi.Conditions{
					NeighborSet:       &gapi.MatchSet{Type: gapi.MatchSet_ANY, Name: nset},
					LargeCommunitySet: &gapi.MatchSet{Type: gapi.MatchSet_ANY, Name: mset},
				},
				Actions: &gapi.Actions{
					RouteAction:    gapi.RouteAction_ACCEPT,
					LargeCommunity: &gapi.CommunityAction{Type: gapi.CommunityAction_REMOVE, Communities: []string{anyMarker}},
				},
			},
			&gapi.Statement{
				Name: fmt.Sprintf("telcolb-not-to-%d", i),
				Conditions: &gapi.Conditions{
					NeighborSet:       &gapi.MatchSet{Type: gapi.MatchSet_ANY, Name: nset},
					LargeCommunitySet: &gapi.MatchSet{Type: gapi.MatchSet_ANY, Name: markerSetAny},
				},
				Actions: &gapi.Actions{RouteAction: gapi.RouteAction_REJECT},
			})
	}
	for _, ds := range sets {
		if err := s.srv.AddDefinedSet(ctx, &gapi.AddDefinedSetRequest{DefinedSet: ds}); err != nil {
			return fmt.Errorf("bgp: export policy: defined set %s: %w", ds.Name, err)
		}
	}
	pol := &gapi.Policy{Name: exportPolicyName, Statements: stmts}
	if err := s.srv.AddPolicy(ctx, &gapi.AddPolicyRequest{Policy: pol}); err != nil {
		return fmt.Errorf("bgp: export policy: %w", err)
	}
	if err := s.srv.AddPolicyAssignment(ctx, &gapi.AddPolicyAssignmentRequest{Assignment: &gapi.PolicyAssignment{
		Name: "global", Direction: gapi.PolicyDirection_EXPORT,
		Policies: []*gapi.Policy{{Name: exportPolicyName}}, DefaultAction: gapi.RouteAction_ACCEPT,
	}}); err != nil {
		return fmt.Errorf("bgp: export policy assignment: %w", err)
	}
	return nil
}
