package sctplb

import (
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telcolb/telcolb/l7parse/diameter"
	"github.com/telcolb/telcolb/sctplb/diam"
)

// diamMetrics are the Diameter agent's Prometheus series.
type diamMetrics struct {
	sessions   *prometheus.GaugeVec
	peerState  *prometheus.GaugeVec
	clients    prometheus.Gauge
	requests   *prometheus.CounterVec
	answers    *prometheus.CounterVec
	results    *prometheus.CounterVec
	resent     *prometheus.CounterVec
	rejected   *prometheus.CounterVec
	sendErrors prometheus.Counter
	// apps, cmds and codes bound the peer-chosen label values.
	apps, cmds, codes boundedLabel
	// byMsg and byResult cache the counters of label values seen: a
	// label lookup per message (hash, validate) was a visible share of
	// the agent's CPU. The bounded labels never change a value's label
	// once given, so a cached counter stays right.
	byMsg    map[msgKey]prometheus.Counter
	byResult map[resultKey]prometheus.Counter
	// lastMsg and lastResult are the counters of the previous lookups:
	// under steady traffic most messages repeat the previous one's
	// labels, and a comparison is cheaper than hashing the key.
	lastMsg     msgKey
	lastMsgC    prometheus.Counter
	lastResult  resultKey
	lastResultC prometheus.Counter
}

// maxCachedCounters bounds each cache: peers choose the raw values, and
// past the bound the label lookup is done per message.
const maxCachedCounters = 1024

type msgKey struct {
	side     diam.Side
	answer   bool
	app, cmd uint32
}

type resultKey struct {
	side   string
	result uint32
}

func newDiamMetrics(reg prometheus.Registerer, agent string) (*diamMetrics, error) {
	l := prometheus.Labels{"agent": agent}
	m := &diamMetrics{apps: boundedLabel{}, cmds: boundedLabel{}, codes: boundedLabel{},
		byMsg: map[msgKey]prometheus.Counter{}, byResult: map[resultKey]prometheus.Counter{},
		sessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "telcolb_diameter_sessions",
			Help: "Diameter Session-Id bindings, per server.", ConstLabels: l}, []string{"server"}),
		peerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "telcolb_diameter_peer_state",
			Help: "1 for the server's current watchdog state (down, connecting, wait-ce, okay, suspect, reopen, closing).", ConstLabels: l}, []string{"server", "state"}),
		clients: prometheus.NewGauge(prometheus.GaugeOpts{Name: "telcolb_diameter_clients",
			Help: "Open client connections.", ConstLabels: l}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "telcolb_diameter_requests_total",
			Help: "Diameter requests received, by side, application and command.", ConstLabels: l}, []string{"side", "application", "command"}),
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "telcolb_diameter_answers_total",
			Help: "Diameter answers received, by side, application and command.", ConstLabels: l}, []string{"side", "application", "command"}),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "telcolb_diameter_result_codes_total",
			Help: "Result-Codes of the answers received from servers and of the agent's own answers (side agent).", ConstLabels: l}, []string{"side", "result"}),
		resent: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "telcolb_diameter_retransmissions_total",
			Help: "Requests re-sent with the T flag to another server after their server failed.", ConstLabels: l}, []string{"server"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "telcolb_diameter_rejected_total",
			Help: "Requests the agent answered itself, or messages it dropped, by reason.", ConstLabels: l}, []string{"reason"}),
		sendErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "telcolb_diameter_send_errors_total",
			Help: "Messages not sent because the peer stopped reading (its connection is closed).", ConstLabels: l}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.sessions, m.peerState, m.clients, m.requests, m.answers, m.results, m.resent, m.rejected, m.sendErrors} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register Diameter metrics: %w", err)
		}
	}
	return m, nil
}

func appLabel(app uint32) string {
	switch app {
	case diameter.AppCommon:
		return "base"
	case diameter.AppRelay:
		return "relay"
	}
	return strconv.FormatUint(uint64(app), 10)
}

// maxLabelValues bounds the distinct values a peer-chosen label
// (application, command, result code) takes per agent: peers choose them,
// and a hostile or broken one must not grow the series without limit.
// Values beyond the bound are counted as "other".
const maxLabelValues = 32

// boundedLabel hands out at most maxLabelValues distinct values. Not safe
// for concurrent use: the agent steps (and counts) under its mutex.
type boundedLabel map[string]bool

func (b boundedLabel) of(v string) string {
	if b[v] {
		return v
	}
	if len(b) >= maxLabelValues {
		return "other"
	}
	b[v] = true
	return v
}

func (m *diamMetrics) action(a diam.Action, names []string) {
	switch a.Kind {
	case diam.Request, diam.Answer:
		m.message(a).Inc()
		if a.Kind == diam.Answer && a.Result != 0 {
			m.result(a.Side.String(), a.Result).Inc()
		}
	case diam.Retransmitted:
		if a.Server >= 0 && a.Server < len(names) {
			m.resent.WithLabelValues(names[a.Server]).Inc()
		}
	case diam.Rejected:
		m.rejected.WithLabelValues(a.Reason).Inc()
		if a.Result != 0 {
			m.result("agent", a.Result).Inc()
		}
	}
}

// message is the request or answer counter of a's labels.
func (m *diamMetrics) message(a diam.Action) prometheus.Counter {
	k := msgKey{side: a.Side, answer: a.Kind == diam.Answer, app: a.App, cmd: a.Cmd}
	if m.lastMsgC != nil && k == m.lastMsg {
		return m.lastMsgC
	}
	if c, ok := m.byMsg[k]; ok {
		m.lastMsg, m.lastMsgC = k, c
		return c
	}
	vec := m.requests
	if k.answer {
		vec = m.answers
	}
	c := vec.WithLabelValues(a.Side.String(), m.apps.of(appLabel(a.App)), m.cmds.of(diameter.CommandName(a.Cmd, !k.answer)))
	if len(m.byMsg) < maxCachedCounters {
		m.byMsg[k] = c
	}
	return c
}

// result is the Result-Code counter of side and code.
func (m *diamMetrics) result(side string, code uint32) prometheus.Counter {
	k := resultKey{side, code}
	if m.lastResultC != nil && k == m.lastResult {
		return m.lastResultC
	}
	if c, ok := m.byResult[k]; ok {
		m.lastResult, m.lastResultC = k, c
		return c
	}
	c := m.results.WithLabelValues(side, m.codes.of(strconv.FormatUint(uint64(code), 10)))
	if len(m.byResult) < maxCachedCounters {
		m.byResult[k] = c
	}
	return c
}

var diamStates = []diam.State{diam.Down, diam.Connecting, diam.WaitCE, diam.Okay, diam.Suspect, diam.Reopen, diam.Closing}

func (m *diamMetrics) state(s DiameterStats, states []diam.State) {
	for i, sv := range s.Servers {
		m.sessions.WithLabelValues(sv.Name).Set(float64(sv.Sessions))
		for _, st := range diamStates {
			v := 0.0
			if states[i] == st {
				v = 1
			}
			m.peerState.WithLabelValues(sv.Name, st.String()).Set(v)
		}
	}
	m.clients.Set(float64(s.Clients))
}

// forget drops the series of a server no longer configured.
func (m *diamMetrics) forget(server string) {
	m.sessions.DeleteLabelValues(server)
	m.resent.DeleteLabelValues(server)
	for _, st := range diamStates {
		m.peerState.DeleteLabelValues(server, st.String())
	}
}
