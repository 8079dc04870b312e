package sctplb

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
	"github.com/telcolb/telcolb/sctplb/steer"
)

// metrics are the proxy's Prometheus series.
type metrics struct {
	ues        *prometheus.GaugeVec
	messages   *prometheus.CounterVec
	failures   *prometheus.CounterVec
	malformed  *prometheus.CounterVec
	rejected   *prometheus.CounterVec
	suppressed *prometheus.CounterVec
	nas        *prometheus.CounterVec
	assocs     *prometheus.GaugeVec
	amfLinks   *prometheus.GaugeVec
	gnbLinks   *prometheus.GaugeVec
	sendErrors prometheus.Counter
	// abortTargetMissing counts gNB associations accepted without an
	// ABORT target (held.go).
	abortTargetMissing prometheus.Counter
	// gnbNames bounds the gnb label (gNB identities come from the gNBs'
	// NG Setup Requests: a broken or hostile RAN must not grow the series);
	// gnbSeries are the (gnb, amf) series set at the last state update.
	gnbNames  boundedLabel
	gnbSeries map[[2]string]bool
	// perProc caches the per-procedure counters: WithLabelValues hashes
	// its labels on every call, too slow for every relayed message.
	perProc [3][256]prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, proxy string) (*metrics, error) {
	labels := prometheus.Labels{"proxy": proxy}
	m := &metrics{
		ues: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "telcolb_n2_ue_contexts", Help: "UE-associated NG connections held, per AMF.", ConstLabels: labels,
		}, []string{"amf"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "telcolb_n2_messages_total", Help: "NGAP messages received, by direction and procedure.", ConstLabels: labels,
		}, []string{"direction", "procedure"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "telcolb_n2_steering_failures_total", Help: "Messages the proxy could not steer, by reason.", ConstLabels: labels,
		}, []string{"reason"}),
		malformed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "telcolb_n2_malformed_total", Help: "Undecodable NGAP PDUs, by direction.", ConstLabels: labels,
		}, []string{"direction"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "telcolb_n2_rejected_total", Help: "Decodable NGAP messages refused by the TS 38.413 section 10 checks, by direction, procedure and reason.", ConstLabels: labels,
		}, []string{"direction", "procedure", "reason"}),
		suppressed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "telcolb_n2_suppressed_total", Help: "Log lines and Error Indications dropped by the per-peer rate limits.", ConstLabels: labels,
		}, []string{"what"}),
		nas: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "telcolb_n2_initial_nas_identity_total", Help: "Initial UE Messages without 5G-S-TMSI, by the identity read from their NAS (5g-guti, 5g-s-tmsi, suci, ciphered, malformed, no-identity).", ConstLabels: labels,
		}, []string{"identity"}),
		assocs: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "telcolb_n2_associations_up", Help: "Established SCTP associations, gNB side and AMF side.", ConstLabels: labels,
		}, []string{"side"}),
		amfLinks: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "telcolb_n2_amf_associations", Help: "The proxy's NG associations to each AMF (one per set-up gNB), by state: ready (NG Setup answered), wanted (all), overloaded.", ConstLabels: labels,
		}, []string{"amf", "state"}),
		gnbLinks: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "telcolb_n2_gnb_associations_ready", Help: "The proxy's NG associations between each gNB (Global RAN Node ID; beyond 32 gNBs: other) and each AMF that are ready; 0 while wanted but not ready.", ConstLabels: labels,
		}, []string{"gnb", "amf"}),
		gnbNames:  boundedLabel{},
		gnbSeries: map[[2]string]bool{},
		sendErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telcolb_n2_send_errors_total", Help: "Messages dropped because an association's send queue was full or failed.", ConstLabels: labels,
		}),
		abortTargetMissing: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telcolb_n2_abort_target_missing_total", Help: "gNB associations accepted whose transport could not tell their ABORT target (kernel transport without sctp_diag): an HA peer taking over cannot abort them.", ConstLabels: labels,
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range m.collectors() {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register N2 metrics: %w", err)
		}
	}
	return m, nil
}

// collectors are every series family of the proxy (docs/metrics.md lists them).
func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.ues, m.messages, m.failures, m.malformed, m.rejected, m.suppressed, m.nas, m.assocs, m.amfLinks, m.gnbLinks, m.sendErrors, m.abortTargetMissing}
}

func (m *metrics) action(a steer.Action) {
	switch a.Kind {
	case steer.CountMessage:
		if a.Dir > steer.Downlink || a.Procedure < 0 || a.Procedure > 255 {
			m.messages.WithLabelValues(a.Dir.String(), ngapl.ProcedureName(a.Procedure)).Inc()
			return
		}
		c := m.perProc[a.Dir][a.Procedure]
		if c == nil {
			c = m.messages.WithLabelValues(a.Dir.String(), ngapl.ProcedureName(a.Procedure))
			m.perProc[a.Dir][a.Procedure] = c
		}
		c.Inc()
	case steer.SteeringFailure:
		m.failures.WithLabelValues(a.Reason).Inc()
	case steer.Malformed:
		m.malformed.WithLabelValues(a.Dir.String()).Inc()
	case steer.Rejected:
		m.rejected.WithLabelValues(a.Dir.String(), ngapl.ProcedureName(a.Procedure), a.Reason).Inc()
	case steer.Suppressed:
		m.suppressed.WithLabelValues(a.Reason).Inc()
	case steer.NASIdentity:
		m.nas.WithLabelValues(a.Reason).Inc()
	}
}

func (m *metrics) state(mc *steer.Machine, names []string) {
	active, links := mc.Active(), mc.Links()
	for i, n := range mc.UEs() {
		if i >= len(names) {
			break
		}
		if !active[i] {
			m.ues.DeleteLabelValues(names[i])
			for _, st := range []string{"ready", "wanted", "overloaded"} {
				m.amfLinks.DeleteLabelValues(names[i], st)
			}
			continue
		}
		m.ues.WithLabelValues(names[i]).Set(float64(n))
		if i < len(links) {
			m.amfLinks.WithLabelValues(names[i], "ready").Set(float64(links[i].Ready))
			m.amfLinks.WithLabelValues(names[i], "wanted").Set(float64(links[i].Wanted))
			m.amfLinks.WithLabelValues(names[i], "overloaded").Set(float64(links[i].Overloaded))
		}
	}
	m.gnbState(mc.GNBLinks(), names)
	g, u := mc.AssociationsUp()
	m.assocs.WithLabelValues("gnb").Set(float64(g))
	m.assocs.WithLabelValues("amf").Set(float64(u))
}

// gnbState sets the per-gNB association series from links and deletes
// those of gNBs and AMFs that are gone. gNBs past the label bound, and any
// without a readable identity ("unknown"), add up under their label.
func (m *metrics) gnbState(links map[steer.GNBLink]int, names []string) {
	// In a fixed order (gNB name, then AMF): the first gNBs seen take the
	// bounded label's names, and which ones must not depend on map order
	// when one update brings more gNBs than the bound.
	keys := make([]steer.GNBLink, 0, len(links))
	for k := range links {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b steer.GNBLink) int {
		return cmp.Or(strings.Compare(a.GNB, b.GNB), cmp.Compare(a.AMF, b.AMF))
	})
	now := map[[2]string]int{}
	for _, k := range keys {
		n := links[k]
		if k.AMF < 0 || k.AMF >= len(names) {
			continue
		}
		g := k.GNB
		if g == "" {
			g = "unknown"
		}
		now[[2]string{m.gnbNames.of(g), names[k.AMF]}] += n
	}
	for k := range m.gnbSeries {
		if _, ok := now[k]; !ok {
			m.gnbLinks.DeleteLabelValues(k[0], k[1])
			delete(m.gnbSeries, k)
		}
	}
	for k, n := range now {
		m.gnbLinks.WithLabelValues(k[0], k[1]).Set(float64(n))
		m.gnbSeries[k] = true
	}
}
