package app

import (
	"context"
	"net/http"
	"net/netip"
	"sort"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/ha"
	"github.com/telcolb/telcolb/ha/bgp"
)

// The advertisement's REST resources: /v1/advertisement and /v1/vips.

// status is GET /v1/advertisement.
func (a *advertiser) status(ctx context.Context) api.AdvertisementStatus {
	a.mu.Lock()
	cfg := a.cfg
	sp, _ := a.announcers[api.AdvertiseBGP].(*bgp.Speaker)
	a.mu.Unlock()
	st := api.AdvertisementStatus{Config: cfg.WithoutSecrets()}
	if sp != nil {
		st.BGPPeers = sp.PeerStatus(ctx)
		st.BFDSessions = sp.BFDStatus()
	}
	return st
}

// vips is GET /v1/vips.
func (a *advertiser) vips() []api.VIPStatus {
	served, anns, _, reasons := a.planNow()
	how := map[netip.Addr]ha.Announcement{}
	for _, ann := range anns {
		for v, an := range ann.Announced() {
			h := how[v]
			h.Via = append(h.Via, an.Via...)
			if an.Owner != "" {
				h.Owner = an.Owner
			}
			how[v] = h
		}
	}
	out := make([]api.VIPStatus, 0, len(served))
	for addr, sv := range served {
		names := append([]string(nil), sv.services...)
		sort.Strings(names)
		st := api.VIPStatus{VIP: addr.String(), Services: names, Reason: reasons[addr], Local: a.s.local.local(addr)}
		if h, ok := how[addr]; ok {
			st.Announced = h.Via
			st.Owner = h.Owner
			if len(h.Via) == 0 && st.Reason == "" {
				st.Reason = "no established session or owned interface"
			}
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VIP < out[j].VIP })
	return out
}

// vipOwner is who announces vip by the advertisement's election, for the
// N2 takeover's gate (n2takeover.go). Only L2 elects an owner (ha/member:
// heartbeats on the clients' segment): owned here when this node answers
// for the VIP, else another member's (or no one's yet, or fenced here).
// BGP has no owner (every node announces, the routers choose), nor has a
// VIP no advertisement covers (its route moved from outside): ownerNone.
// With both modes on a VIP, L2's election decides.
func (a *advertiser) vipOwner(vip netip.Addr) vipOwner {
	a.mu.Lock()
	l2 := a.announcers[api.AdvertiseL2]
	a.mu.Unlock()
	if l2 == nil {
		return ownerNone
	}
	an, ok := l2.Announced()[vip]
	switch {
	case !ok:
		return ownerNone
	case len(an.Via) > 0:
		return ownerSelf
	}
	return ownerOther
}

func (s *Server) getAdvertisement(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.adv.status(r.Context()))
}

func (s *Server) putAdvertisement(w http.ResponseWriter, r *http.Request) {
	var c api.AdvertisementConfig
	if err := decodeStrict(w, r, &c); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.adv.put(c); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.adv.status(r.Context()))
}

func (s *Server) listVIPs(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.adv.vips())
}
