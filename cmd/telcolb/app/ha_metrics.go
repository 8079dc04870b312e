package app

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telcolb/telcolb/api"

	"github.com/telcolb/telcolb/ha/sync"
)

// HA sync metrics (docs/metrics.md).
var (
	descHAPeerUp = prometheus.NewDesc("telcolb_ha_peer_up",
		"1 while the HA sync connection with the peer is up (hello received), else 0.", []string{"peer"}, nil)
	descHAPeerSynced = prometheus.NewDesc("telcolb_ha_peer_synced",
		"1 once the peer's bulk resync to this node has completed, else 0.", []string{"peer"}, nil)
	descHAPeerRTO = prometheus.NewDesc("telcolb_ha_peer_retransmit_timeout_seconds",
		"The HA sync's retransmission timeout towards the peer now: follows the peer's measured acknowledgement delay, doubled by each expiry.", []string{"peer"}, nil)
	descHAReady = prometheus.NewDesc("telcolb_ha_ready",
		"1 once every reachable HA peer has sent its table (VIPs may be announced), else 0.", nil, nil)
	descHARecordsSent = prometheus.NewDesc("telcolb_ha_records_sent_total",
		"Conntrack records sent to HA peers (resends included).", nil, nil)
	descHARecordsResent = prometheus.NewDesc("telcolb_ha_records_resent_total",
		"Conntrack records sent again to HA peers after a timeout or a Nack.", nil, nil)
	descHARecordsReceived = prometheus.NewDesc("telcolb_ha_records_received_total",
		"Conntrack records received from HA peers and applied.", nil, nil)
	descHAResyncs = prometheus.NewDesc("telcolb_ha_resyncs_total",
		"Bulk resyncs this node started towards a peer (join, rejoin, back-pressure).", nil, nil)
	descHARefused = prometheus.NewDesc("telcolb_ha_connections_refused_total",
		"HA sync connections refused: TLS failures and certificates naming no group member.", nil, nil)
	descHALag = prometheus.NewDesc("telcolb_ha_sync_lag_seconds",
		"Time from a conntrack change to its acknowledgement by a peer.", nil, nil)
	descHATLSReloadErrors = prometheus.NewDesc("telcolb_ha_tls_reload_errors_total",
		"Changed HA sync TLS file sets (certificate, key, CA bundle) that did not load; the previous set stays in use.", nil, nil)
	descHATLSCertExpiry = prometheus.NewDesc("telcolb_ha_tls_cert_expiry_timestamp_seconds",
		"When the HA sync certificate in use expires (notAfter, Unix seconds); follows a renewal of its files.", nil, nil)
	descHAEventsLost = prometheus.NewDesc("telcolb_ha_conntrack_events_lost_total",
		"Conntrack change events the datapath dropped (ring buffer full); the next refresh sends the entries.", nil, nil)
	descHAKeepalives = prometheus.NewDesc("telcolb_ha_keepalives_sent_total",
		"Keepalive hellos sent to HA peers on connections idle for the keepalive interval.", nil, nil)
	descHAPeerTimeouts = prometheus.NewDesc("telcolb_ha_peer_timeouts_total",
		"HA sync connections closed as lost because the peer was silent past the peer timeout.", nil, nil)
	descHAEntriesTakenOver = prometheus.NewDesc("telcolb_ha_entries_taken_over_total",
		"Peers' conntrack entries this node took over, by reason: traffic (the flow carried packets here), peer_down (the peer that sent it is down), changed (its state changed here).", []string{"reason"}, nil)
	descHAEntriesYielded = prometheus.NewDesc("telcolb_ha_entries_yielded_total",
		"Conntrack entries this node owned and gave up to a peer whose flow saw a packet more recently.", nil, nil)
	descHAN2TakeoverAborts = prometheus.NewDesc("telcolb_ha_n2_takeover_aborts_total",
		"SCTP ABORTs of a lost HA peer's gNB associations (N2 takeover), by result: sent, failed (not sent), own (skipped: this node holds the association).", []string{"result"}, nil)
)

// haSnapshot is what the HA collector reads on every scrape.
type haSnapshot struct {
	peers      []string
	up, synced map[string]bool
	ready      bool
	stats      sync.NodeStats
	eventsLost uint64
	held       int // records held from peers
	n2Aborts   map[string]uint64
	moves      haMoves
}

// haMoves counts conntrack entries changing hands between HA nodes.
type haMoves struct {
	takenTraffic, takenPeerDown, takenChanged, yielded uint64
}

type haCollector struct{ read func() haSnapshot }

func (c *haCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descHAPeerUp, descHAPeerSynced, descHAPeerRTO, descHAReady, descHARecordsSent, descHARecordsResent,
		descHARecordsReceived, descHAResyncs, descHARefused, descHALag, descHAEventsLost, descHATLSReloadErrors, descHATLSCertExpiry, descHAKeepalives, descHAPeerTimeouts, descHAN2TakeoverAborts,
		descHAEntriesTakenOver, descHAEntriesYielded} {
		ch <- d
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *haCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.read()
	for _, p := range s.peers {
		ch <- prometheus.MustNewConstMetric(descHAPeerUp, prometheus.GaugeValue, b2f(s.up[p]), p)
		ch <- prometheus.MustNewConstMetric(descHAPeerSynced, prometheus.GaugeValue, b2f(s.synced[p]), p)
	}
	ch <- prometheus.MustNewConstMetric(descHAReady, prometheus.GaugeValue, b2f(s.ready))
	st := s.stats
	// The sync's timer per peer (ha/sync retransmit.go): near its top, the
	// peer acknowledges slowly (loaded) or not at all.
	for _, p := range st.Peers {
		ch <- prometheus.MustNewConstMetric(descHAPeerRTO, prometheus.GaugeValue, p.RTO.Seconds(), p.Name)
	}
	ch <- prometheus.MustNewConstMetric(descHARecordsSent, prometheus.CounterValue, float64(st.SentRecords))
	ch <- prometheus.MustNewConstMetric(descHARecordsResent, prometheus.CounterValue, float64(st.ResentRecords))
	ch <- prometheus.MustNewConstMetric(descHARecordsReceived, prometheus.CounterValue, float64(st.ReceivedRecords))
	ch <- prometheus.MustNewConstMetric(descHAResyncs, prometheus.CounterValue, float64(st.Resyncs))
	ch <- prometheus.MustNewConstMetric(descHARefused, prometheus.CounterValue, float64(st.Refused))
	// Liveness (ha/sync liveness.go): keepalives show an idle sync is
	// alive; a timeout is the sync's verdict that a peer died or its link
	// was cut (the N2 takeover acts on it).
	ch <- prometheus.MustNewConstMetric(descHAKeepalives, prometheus.CounterValue, float64(st.Keepalives))
	ch <- prometheus.MustNewConstMetric(descHAPeerTimeouts, prometheus.CounterValue, float64(st.SilentPeers))
	ch <- prometheus.MustNewConstMetric(descHAEventsLost, prometheus.CounterValue, float64(s.eventsLost))
	m := s.moves
	ch <- prometheus.MustNewConstMetric(descHAEntriesTakenOver, prometheus.CounterValue, float64(m.takenTraffic), "traffic")
	ch <- prometheus.MustNewConstMetric(descHAEntriesTakenOver, prometheus.CounterValue, float64(m.takenPeerDown), "peer_down")
	ch <- prometheus.MustNewConstMetric(descHAEntriesTakenOver, prometheus.CounterValue, float64(m.takenChanged), "changed")
	ch <- prometheus.MustNewConstMetric(descHAEntriesYielded, prometheus.CounterValue, float64(m.yielded))
	for _, r := range takeoverResults {
		ch <- prometheus.MustNewConstMetric(descHAN2TakeoverAborts, prometheus.CounterValue, float64(s.n2Aborts[r]), r)
	}
	ch <- prometheus.MustNewConstMetric(descHATLSReloadErrors, prometheus.CounterValue, float64(st.TLSReloadErrors))
	if !st.CertNotAfter.IsZero() {
		ch <- prometheus.MustNewConstMetric(descHATLSCertExpiry, prometheus.GaugeValue, float64(st.CertNotAfter.Unix()))
	}
	buckets := map[float64]uint64{}
	var cum uint64
	for i, ub := range sync.LagBuckets {
		cum += st.Lag.Counts[i]
		buckets[ub.Seconds()] = cum
	}
	ch <- prometheus.MustNewConstHistogram(descHALag, st.Lag.Count, st.Lag.Sum.Seconds(), buckets)
}

// eventsLoster is implemented by *dataplane.Datapath.
type eventsLoster interface {
	ConntrackEventsLost() (uint64, error)
}

// Collector exports the HA sync's metrics.
func (h *HA) Collector() prometheus.Collector {
	return &haCollector{read: h.snapshot}
}

func (h *HA) snapshot() haSnapshot {
	s := haSnapshot{up: map[string]bool{}, synced: map[string]bool{}, stats: h.node.Stats()}
	for _, p := range h.cfg.Node.Peers {
		s.peers = append(s.peers, p.Name)
		s.up[p.Name], s.synced[p.Name] = h.node.Up(p.Name), h.node.Synced(p.Name)
	}
	s.ready = h.Waiting() == ""
	h.mu.Lock()
	for _, c := range h.imported {
		if !c.deleting { // a copy the peer deleted is on its way out
			s.held++
		}
	}
	s.moves = h.moves
	h.mu.Unlock()
	s.n2Aborts = h.n2.takeoverCounts()
	if l, ok := h.dp.(eventsLoster); ok {
		if n, err := l.ConntrackEventsLost(); err == nil {
			s.eventsLost = n
		}
	}
	return s
}

// haStatuser is implemented by *HA.
type haStatuser interface {
	Status() api.HAStatus
}

func (s *Server) getHA(w http.ResponseWriter, _ *http.Request) {
	st := api.HAStatus{}
	if h, ok := s.ready.(haStatuser); ok {
		st = h.Status()
	}
	writeJSON(w, http.StatusOK, st)
}

// Status is GET /v1/ha.
func (h *HA) Status() api.HAStatus {
	s := h.snapshot()
	why := h.Waiting()
	st := api.HAStatus{Enabled: true, Node: h.cfg.Node.Self, Ready: why == "", NotReady: why,
		Entries: s.held, RecordsSent: s.stats.SentRecords, RecordsReceived: s.stats.ReceivedRecords,
		RecordsResent: s.stats.ResentRecords, LagP99Seconds: lagP99(s.stats.Lag), N2Records: h.n2.Held(), Drain: h.drainStatus()}
	timers := map[string]sync.PeerStats{}
	for _, p := range s.stats.Peers {
		timers[p.Name] = p
	}
	for _, p := range s.peers {
		st.Peers = append(st.Peers, api.HAPeerStatus{Name: p, Up: s.up[p], Synced: s.synced[p],
			RetransmitTimeoutSeconds: timers[p].RTO.Seconds(), AckDelaySeconds: timers[p].SRTT.Seconds()})
	}
	return st
}

// lagP99 is the upper bound of the bucket holding the 99th percentile
// (the last bound when it is above every bound).
func lagP99(h sync.Histogram) float64 {
	if h.Count == 0 {
		return 0
	}
	want := (h.Count*99 + 99) / 100
	var cum uint64
	for i, n := range h.Counts {
		cum += n
		if cum >= want {
			if i < len(sync.LagBuckets) {
				return sync.LagBuckets[i].Seconds()
			}
			break
		}
	}
	return sync.LagBuckets[len(sync.LagBuckets)-1].Seconds()
}
