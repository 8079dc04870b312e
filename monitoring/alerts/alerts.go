// Package alerts defines telcolb's Prometheus alert rules in Go and
// renders them as a Prometheus rule file and as a prometheus-operator
// PrometheusRule object (`go run ./monitoring/gen`). promtool checks and
// unit-tests the rendered file (testdata/telcolb.rules_test.yaml).
package alerts

import (
	"fmt"

	"sigs.k8s.io/yaml"
)

// Rule is one alerting rule.
type Rule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Group is a rule group.
type Group struct {
	Name  string `json:"name"`
	Rules []Rule `json:"rules"`
}

// DaemonJob is the Prometheus job name the daemon alert expects: the
// ServiceMonitor in k8s/deploy/monitoring yields it (the headless Service's
// name), and plain Prometheus configurations should use it too.
const DaemonJob = "telcolb-daemon"

// Groups returns every rule group.
func Groups() []Group {
	return []Group{{
		Name: "telcolb",
		Rules: []Rule{
			{
				Alert:  "TelcolbEndpointDown",
				Expr:   `telcolb_endpoint_up == 0`,
				For:    "1m",
				Labels: map[string]string{"severity": "warning"},
				Annotations: map[string]string{
					"summary":     "Endpoint {{ $labels.endpoint }} of service {{ $labels.service }} is down",
					"description": "{{ $labels.instance }} takes endpoint {{ $labels.endpoint }} of {{ $labels.service }} out of rotation: its probe fails (N2: no NG association to the AMF is ready; PFCP: the UPF is not associated).",
				},
			},
			{
				Alert:  "TelcolbVIPPoolNearlyExhausted",
				Expr:   `telcolb_controller_pool_in_use / telcolb_controller_pool_size > 0.9`,
				For:    "5m",
				Labels: map[string]string{"severity": "warning"},
				Annotations: map[string]string{
					"summary":     "VIP pool {{ $labels.pool }} ({{ $labels.family }}) is {{ $value | humanizePercentage }} used",
					"description": "More than 90% of pool {{ $labels.pool }} is allocated; new LoadBalancer Services will get no address once it is full.",
				},
			},
			{
				Alert:  "TelcolbAMFAssociationDown",
				Expr:   `telcolb_n2_amf_associations{state="wanted"} - ignoring(state) telcolb_n2_amf_associations{state="ready"} > 0`,
				For:    "1m",
				Labels: map[string]string{"severity": "critical"},
				Annotations: map[string]string{
					"summary":     "N2 proxy {{ $labels.proxy }}: {{ $value }} NG association(s) to AMF {{ $labels.amf }} not ready",
					"description": "The proxy wants an NG association to AMF {{ $labels.amf }} per set-up gNB, and {{ $value }} of them are not set up (SCTP down or NG Setup refused). New UEs go to the other AMFs.",
				},
			},
			{
				Alert:  "TelcolbN2SteeringFailuresRising",
				Expr:   `sum by (job, instance, proxy) (rate(telcolb_n2_steering_failures_total[5m])) > 0.1`,
				For:    "5m",
				Labels: map[string]string{"severity": "warning"},
				Annotations: map[string]string{
					"summary":     "N2 proxy {{ $labels.proxy }} fails to steer {{ $value | humanize }} messages/s",
					"description": "More than 30 NGAP messages in 5 minutes could not be steered to an AMF (see telcolb_n2_steering_failures_total by reason and the daemon's log).",
				},
			},
			{
				Alert:  "TelcolbDaemonUnreachable",
				Expr:   fmt.Sprintf(`up{job=%q} == 0 or telcolb_controller_daemon_up == 0`, DaemonJob),
				For:    "2m",
				Labels: map[string]string{"severity": "critical"},
				Annotations: map[string]string{
					"summary":     "telcolb daemon {{ with $labels.daemon }}{{ . }}{{ else }}{{ $labels.instance }}{{ end }} is unreachable",
					"description": "Prometheus cannot scrape the daemon, or the controller's health check of it fails: the node's rules cannot be changed and its metrics are missing.",
				},
			},
			{
				Alert:  "TelcolbBGPSessionDown",
				Expr:   `telcolb_bgp_session_up == 0`,
				For:    "1m",
				Labels: map[string]string{"severity": "critical"},
				Annotations: map[string]string{
					"summary":     "BGP session of {{ $labels.instance }} with {{ $labels.peer }} is down",
					"description": "{{ $labels.instance }} has no established BGP session with {{ $labels.peer }}: the VIPs it announces are not reachable through that router.",
				},
			},
			{
				Alert:  "TelcolbBFDSessionDown",
				Expr:   `telcolb_bfd_session_up == 0`,
				For:    "1m",
				Labels: map[string]string{"severity": "critical"},
				Annotations: map[string]string{
					"summary":     "BFD session of {{ $labels.instance }} with {{ $labels.peer }} is down",
					"description": "BFD with {{ $labels.peer }} is not Up: the link or the router's forwarding toward {{ $labels.instance }} fails, and the BGP session over it is taken down.",
				},
			},
			{
				// cert-manager renews at 2/3 of a certificate's life (30 days
				// before a 90-day one expires) and the sync reloads the files
				// live: a week left means the renewal or its reload failed.
				Alert:  "TelcolbHASyncCertificateExpiring",
				Expr:   `telcolb_ha_tls_cert_expiry_timestamp_seconds - time() < 7 * 86400`,
				For:    "10m",
				Labels: map[string]string{"severity": "warning"},
				Annotations: map[string]string{
					"summary":     "HA sync certificate of {{ $labels.instance }} expires in {{ $value | humanizeDuration }}",
					"description": "The certificate {{ $labels.instance }} presents to its HA peers was not renewed in time (check its cert-manager Certificate and telcolb_ha_tls_reload_errors_total). Once it expires, every new sync connection is refused and a failover loses the peer's connections.",
				},
			},
			{
				Alert:  "TelcolbDiameterPeerDown",
				Expr:   `telcolb_diameter_peer_state{state="okay"} == 0`,
				For:    "1m",
				Labels: map[string]string{"severity": "critical"},
				Annotations: map[string]string{
					"summary":     "Diameter agent {{ $labels.agent }}: server {{ $labels.server }} is not okay",
					"description": "The watchdog of server {{ $labels.server }} is not in the okay state (down, connecting or suspect): the agent sends its new sessions to the other servers and re-sends its pending requests there.",
				},
			},
		},
	}}
}

// RuleFile renders the groups as a Prometheus rule file.
func RuleFile() ([]byte, error) {
	b, err := yaml.Marshal(map[string]any{"groups": Groups()})
	if err != nil {
		return nil, fmt.Errorf("rule file: %w", err)
	}
	return append([]byte(header), b...), nil
}

// PrometheusRule renders the groups as a prometheus-operator object.
func PrometheusRule() ([]byte, error) {
	obj := map[string]any{
		"apiVersion": "monitoring.coreos.com/v1",
		"kind":       "PrometheusRule",
		"metadata": map[string]any{
			"name":   "telcolb",
			"labels": map[string]string{"app.kubernetes.io/name": "telcolb"},
		},
		"spec": map[string]any{"groups": Groups()},
	}
	b, err := yaml.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("PrometheusRule: %w", err)
	}
	return append([]byte(header), b...), nil
}

const header = "# Generated by `go run ./monitoring/gen` from monitoring/alerts; do not edit.\n"
