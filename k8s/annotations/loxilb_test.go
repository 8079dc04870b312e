package annotations

import (
	"reflect"
	"strings"
	"testing"
)

// The kube-loxilb docs' own examples, read under loxilb.io/ with the
// migration flag, keep kube-loxilb's meaning.
func TestLoxilbAnnotationsKeepKubeLoxilbMeaning(t *testing.T) {
	opts := testOpts
	opts.AcceptLoxilb = true
	tests := []struct {
		name string
		ann  map[string]string
		want *ProbeSpec
		warn string
	}{
		{"liveness alone probes every 60s (kube-loxilb's default duration)",
			map[string]string{"loxilb.io/liveness": "yes"}, &ProbeSpec{IntervalSeconds: 60}, ""},
		{"probetimeout is the probe duration, not the per-probe timeout",
			map[string]string{"loxilb.io/liveness": "yes", "loxilb.io/probetimeout": "10"}, &ProbeSpec{IntervalSeconds: 10}, ""},
		{"docs example: probetimeout 10, proberetries 3, epselect hash",
			map[string]string{"loxilb.io/liveness": "yes", "loxilb.io/probetimeout": "10", "loxilb.io/proberetries": "3", "loxilb.io/epselect": "hash"},
			&ProbeSpec{IntervalSeconds: 10, Retries: 3}, ""},
		{"probetimeout 60 as in the docs",
			map[string]string{"loxilb.io/liveness": "yes", "loxilb.io/probetimeout": "60"}, &ProbeSpec{IntervalSeconds: 60}, ""},
		{"probetype ping",
			map[string]string{"loxilb.io/probetype": "ping"}, &ProbeSpec{Type: "ping", IntervalSeconds: 60}, ""},
		{"docs example: tcp probe with probereq is accepted, probereq ignored",
			map[string]string{"loxilb.io/probetype": "tcp", "loxilb.io/probeport": "3000", "loxilb.io/probereq": "health"},
			&ProbeSpec{Type: "tcp", Port: 3000, IntervalSeconds: 60}, "loxilb.io/probereq is ignored: tcp probes send no request"},
		{"docs example: tcp probe with probereq and proberesp",
			map[string]string{"loxilb.io/probetype": "tcp", "loxilb.io/probeport": "3000", "loxilb.io/probereq": "health", "loxilb.io/proberesp": "ok"},
			&ProbeSpec{Type: "tcp", Port: 3000, IntervalSeconds: 60}, "loxilb.io/proberesp is ignored"},
		{"http probe keeps its request",
			map[string]string{"loxilb.io/probetype": "http", "loxilb.io/probereq": "health", "loxilb.io/proberesp": "ok"},
			&ProbeSpec{Type: "http", Request: "/health", Response: "ok", IntervalSeconds: 60}, ""},
		{"probeport without probetype is not applied",
			map[string]string{"loxilb.io/liveness": "yes", "loxilb.io/probeport": "3000"}, &ProbeSpec{IntervalSeconds: 60}, "kube-loxilb applies a probe port only with loxilb.io/probetype"},
		{"probe settings without liveness are ignored",
			map[string]string{"loxilb.io/probetimeout": "10", "loxilb.io/proberetries": "3"}, nil, "loxilb.io/probetimeout is ignored: the probe is off"},
		{"our probeinterval wins over the loxilb.io duration",
			map[string]string{"loxilb.io/liveness": "yes", "loxilb.io/probetimeout": "10", "telcolb.io/probeinterval": "20"},
			&ProbeSpec{IntervalSeconds: 20}, "telcolb.io/probeinterval wins"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Parse(tt.ann, opts)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(res.Spec.Probe, tt.want) {
				t.Fatalf("probe = %+v, want %+v", res.Spec.Probe, tt.want)
			}
			joined := strings.Join(res.Warnings, "\n")
			if tt.warn == "" && joined != "" || !strings.Contains(joined, tt.warn) {
				t.Fatalf("warnings = %q, want containing %q", joined, tt.warn)
			}
		})
	}
	// A duration the daemon cannot take is reported against the annotation
	// the user wrote, not a daemon field.
	_, err := Parse(map[string]string{"loxilb.io/liveness": "yes", "loxilb.io/probetimeout": "1"}, opts)
	if es := Errors(err); len(es) != 1 || es[0].Annotation != "loxilb.io/probetimeout" || strings.Contains(err.Error(), "timeoutSeconds") {
		t.Fatalf("err = %v", err)
	}
}

func TestLoxilbAnnotationsWithoutTheFlagAreListed(t *testing.T) {
	res, err := Parse(map[string]string{"loxilb.io/staticIP": "192.0.2.1", "loxilb.io/lbmode": "fullnat", "telcolb.io/timeout": "30", "example.com/x": "y"}, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(res.IgnoredLoxilb, ","); got != "loxilb.io/lbmode,loxilb.io/staticIP" {
		t.Fatalf("IgnoredLoxilb = %q", got)
	}
	if res.Spec.Mode != "" || len(res.Spec.StaticIPs) != 0 {
		t.Fatalf("loxilb.io annotations applied without the flag: %+v", res.Spec)
	}
	opts := testOpts
	opts.AcceptLoxilb = true
	res, _ = Parse(map[string]string{"loxilb.io/lbmode": "fullnat"}, opts)
	if len(res.IgnoredLoxilb) != 0 {
		t.Fatalf("IgnoredLoxilb with the flag: %v", res.IgnoredLoxilb)
	}
}

// Every Table entry says what it does; names are unique.
func TestTableDescribesEveryAnnotation(t *testing.T) {
	seen := map[string]bool{}
	for _, e := range Table {
		if e.Telcolb == "" || e.parse == nil || seen[e.Name] {
			t.Fatalf("entry %+v", e)
		}
		seen[e.Name] = true
	}
}
