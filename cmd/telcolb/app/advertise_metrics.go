package app

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/ha/bgp"
)

var (
	descBGPSession = prometheus.NewDesc("telcolb_bgp_session_up",
		"1 when the BGP session with the peer is established, else 0.", []string{"peer"}, nil)
	descBGPPrefixes = prometheus.NewDesc("telcolb_bgp_prefixes_sent",
		"Prefixes advertised to the peer on the established session.", []string{"peer"}, nil)
	descBFDSession = prometheus.NewDesc("telcolb_bfd_session_up",
		"1 when the BFD session with the peer is Up, else 0.", []string{"peer"}, nil)
	descVIPsAnnounced = prometheus.NewDesc("telcolb_vips_announced",
		"VIPs this node hands to an announcer, by mode.", []string{"mode"}, nil)
	descAnnounceChanges = prometheus.NewDesc("telcolb_vip_announcement_changes_total",
		"VIPs that started or stopped being announced (or changed mode) on this node.", nil, nil)
)

// advCollector reads the announcers on every scrape.
type advCollector struct{ a *advertiser }

func (c *advCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBGPSession, descBGPPrefixes, descBFDSession, descVIPsAnnounced, descAnnounceChanges} {
		ch <- d
	}
}

func (c *advCollector) Collect(ch chan<- prometheus.Metric) {
	a := c.a
	a.mu.Lock()
	sp, _ := a.announcers[api.AdvertiseBGP].(*bgp.Speaker)
	modes := map[string]int{}
	for _, m := range a.announced {
		for _, mode := range []string{api.AdvertiseBGP, api.AdvertiseL2} {
			if slices.Contains(strings.Split(m, "+"), mode) {
				modes[mode]++
			}
		}
	}
	changes := a.changes
	a.mu.Unlock()
	for _, mode := range []string{api.AdvertiseBGP, api.AdvertiseL2} {
		ch <- prometheus.MustNewConstMetric(descVIPsAnnounced, prometheus.GaugeValue, float64(modes[mode]), mode)
	}
	ch <- prometheus.MustNewConstMetric(descAnnounceChanges, prometheus.CounterValue, float64(changes))
	if sp == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, p := range sp.PeerStatus(ctx) {
		up := 0.0
		if p.State == "established" {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descBGPSession, prometheus.GaugeValue, up, p.Name)
		ch <- prometheus.MustNewConstMetric(descBGPPrefixes, prometheus.GaugeValue, float64(p.PrefixesSent), p.Name)
	}
	for _, b := range sp.BFDStatus() {
		up := 0.0
		if b.State == "Up" {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descBFDSession, prometheus.GaugeValue, up, b.Peer)
	}
}
