package l2

import (
	"github.com/prometheus/client_golang/prometheus"
)

var (
	descMemberUp = prometheus.NewDesc("telcolb_l2_member_up",
		"1 when the L2 group member is alive and ready as this node sees it (this node included).", []string{"member"}, nil)
	descOwned = prometheus.NewDesc("telcolb_l2_vips_owned",
		"VIPs this node owns and answers ARP / NS for.", nil, nil)
	descVIPs = prometheus.NewDesc("telcolb_l2_vips",
		"VIPs given to the L2 announcer (owned here or elsewhere).", nil, nil)
	descChanges = prometheus.NewDesc("telcolb_l2_ownership_changes_total",
		"VIP owner changes seen by this node (takeovers, failbacks, VIPs added).", nil, nil)
	descFrames = prometheus.NewDesc("telcolb_l2_frames_sent_total",
		"ARP replies, Neighbor Advertisements, gratuitous announcements and probes (for fenced VIPs) sent, per interface.", []string{"interface", "kind"}, nil)
	descFenced = prometheus.NewDesc("telcolb_l2_vips_fenced",
		"VIPs this node owns by the ownership rules but does not answer for, having lost a split-brain conflict on the segment.", nil, nil)
	descConflicts = prometheus.NewDesc("telcolb_l2_conflicts_total",
		"Split-brain conflicts confirmed by this node: another MAC kept claiming a VIP it owned (won or lost).", nil, nil)
	descMalformed = prometheus.NewDesc("telcolb_l2_malformed_frames_total",
		"Received ARP / NS frames that failed to parse, per interface.", []string{"interface"}, nil)
)

// collector reads the announcer's state at scrape time.
type collector struct{ a *Announcer }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMemberUp, descOwned, descVIPs, descChanges, descFrames, descFenced, descConflicts, descMalformed} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	for _, m := range c.a.node.Members() {
		up := 0.0
		if m.Alive && m.Ready {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descMemberUp, prometheus.GaugeValue, up, m.Name)
	}
	c.a.mu.Lock()
	owned, fenced, vips, changes := len(c.a.owned), len(c.a.fenced), len(c.a.ifs), c.a.changes
	c.a.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descFenced, prometheus.GaugeValue, float64(fenced))
	ch <- prometheus.MustNewConstMetric(descConflicts, prometheus.CounterValue, float64(c.a.node.Stats().Conflicts))
	ch <- prometheus.MustNewConstMetric(descOwned, prometheus.GaugeValue, float64(owned))
	ch <- prometheus.MustNewConstMetric(descVIPs, prometheus.GaugeValue, float64(vips))
	ch <- prometheus.MustNewConstMetric(descChanges, prometheus.CounterValue, float64(changes))
	for name, st := range c.a.resp.Stats() {
		ch <- prometheus.MustNewConstMetric(descFrames, prometheus.CounterValue, float64(st.ARPReplies), name, "arp_reply")
		ch <- prometheus.MustNewConstMetric(descFrames, prometheus.CounterValue, float64(st.NAReplies), name, "na")
		ch <- prometheus.MustNewConstMetric(descFrames, prometheus.CounterValue, float64(st.Announcements), name, "announcement")
		ch <- prometheus.MustNewConstMetric(descFrames, prometheus.CounterValue, float64(st.Probes), name, "probe")
		ch <- prometheus.MustNewConstMetric(descMalformed, prometheus.CounterValue, float64(st.Malformed), name)
	}
}
