package annotations

import (
	"github.com/telcolb/telcolb/api"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func pools(names ...string) func(string) bool {
	return func(n string) bool {
		for _, x := range names {
			if x == n {
				return true
			}
		}
		return false
	}
}

var testOpts = Options{DefaultPool: "defaultPool", PoolExists: pools("defaultPool", "pool1", "pool2", "pool3", "pool4"), Ignore: []string{"allocations"}}

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, x := range s {
		out = append(out, netip.MustParseAddr(x))
	}
	return out
}

func TestParseValidAnnotations(t *testing.T) {
	tests := []struct {
		name string
		ann  map[string]string
		want Spec
		warn string
	}{
		{"no annotations uses the default pool", nil, Spec{Pool: "defaultPool"}, ""},
		{"poolSelect", map[string]string{"telcolb.io/poolSelect": "pool1"}, Spec{Pool: "pool1", PoolSelected: true}, ""},
		{"poolSelect with doc curly quotes", map[string]string{"telcolb.io/poolSelect": "“pool1”"}, Spec{Pool: "pool1", PoolSelected: true}, ""},
		{"poolSelectSecondary", map[string]string{"telcolb.io/poolSelectSecondary": "pool2, pool3"}, Spec{Pool: "defaultPool", SecondaryPools: []string{"pool2", "pool3"}}, ""},
		{"secondaryIPs", map[string]string{"telcolb.io/secondaryIPs": "1.1.1.1,2.2.2.2"}, Spec{Pool: "defaultPool", SecondaryIPs: addrs("1.1.1.1", "2.2.2.2")}, ""},
		{"secondaryIPs win over poolSelectSecondary", map[string]string{"telcolb.io/secondaryIPs": "1.1.1.1", "telcolb.io/poolSelectSecondary": "pool2"}, Spec{Pool: "defaultPool", SecondaryIPs: addrs("1.1.1.1")}, "telcolb.io/poolSelectSecondary is ignored"},
		{"staticIP", map[string]string{"telcolb.io/staticIP": "192.168.255.254"}, Spec{Pool: "defaultPool", StaticIPs: addrs("192.168.255.254")}, ""},
		{"dual-stack staticIP", map[string]string{"telcolb.io/staticIP": "192.0.2.1,2001:db8::1"}, Spec{Pool: "defaultPool", StaticIPs: addrs("192.0.2.1", "2001:db8::1")}, ""},
		{"lbmode", map[string]string{"telcolb.io/lbmode": "FullNAT"}, Spec{Pool: "defaultPool", Mode: "fullnat"}, ""},
		{"lbmode dsr", map[string]string{"telcolb.io/lbmode": "dsr"}, Spec{Pool: "defaultPool", Mode: "dsr"}, ""},
		{"epselect lc", map[string]string{"telcolb.io/epselect": "lc"}, Spec{Pool: "defaultPool", Select: "leastconn"}, ""},
		{"epselect maglev", map[string]string{"telcolb.io/epselect": "maglev"}, Spec{Pool: "defaultPool", Select: "maglev"}, ""},
		{"epselect hash", map[string]string{"telcolb.io/epselect": "hash"}, Spec{Pool: "defaultPool", Select: "hash"}, ""},
		{"liveness only probes by protocol", map[string]string{"telcolb.io/liveness": "yes"}, Spec{Pool: "defaultPool", Probe: &ProbeSpec{}}, ""},
		{"liveness no", map[string]string{"telcolb.io/liveness": "no"}, Spec{Pool: "defaultPool"}, ""},
		{"probetype none switches probing off", map[string]string{"telcolb.io/liveness": "yes", "telcolb.io/probetype": "none"}, Spec{Pool: "defaultPool"}, ""},
		{"sctp probe", map[string]string{"telcolb.io/probetype": "sctp", "telcolb.io/probeport": "38412", "telcolb.io/probeinterval": "15", "telcolb.io/probetimeout": "10", "telcolb.io/proberetries": "3"},
			Spec{Pool: "defaultPool", Probe: &ProbeSpec{Type: "sctp", Port: 38412, IntervalSeconds: 15, TimeoutSeconds: 10, Retries: 3}}, ""},
		{"http probe request and response", map[string]string{"telcolb.io/probetype": "http", "telcolb.io/probereq": "health", "telcolb.io/proberesp": "ok"},
			Spec{Pool: "defaultPool", Probe: &ProbeSpec{Type: "http", Request: "/health", Response: "ok"}}, ""},
		{"udp probe payload", map[string]string{"telcolb.io/probetype": "udp", "telcolb.io/probereq": "ping", "telcolb.io/proberesp": "pong"},
			Spec{Pool: "defaultPool", Probe: &ProbeSpec{Type: "udp", Request: "ping", Response: "pong"}}, ""},
		{"ping probe", map[string]string{"telcolb.io/probetype": "ping"}, Spec{Pool: "defaultPool", Probe: &ProbeSpec{Type: "ping"}}, ""},
		{"timeout", map[string]string{"telcolb.io/timeout": "60"}, Spec{Pool: "defaultPool", IdleTimeoutSeconds: 60}, ""},
		{"ipam ipv6to4", map[string]string{"telcolb.io/ipam": "ipv6to4"}, Spec{Pool: "defaultPool", IPAM: "ipv6to4"}, ""},
		{"usepodnetwork", map[string]string{"telcolb.io/usepodnetwork": "yes"}, Spec{Pool: "defaultPool", UsePodNetwork: true}, ""},
		{"n2", map[string]string{"telcolb.io/n2": "true"}, Spec{Pool: "defaultPool", N2: true}, ""},
		{"pfcp", map[string]string{"telcolb.io/pfcp": "yes"}, Spec{Pool: "defaultPool", PFCP: true}, ""},
		{"diameter relay", map[string]string{"telcolb.io/diameter": "relay", "telcolb.io/diameter-origin-host": "dra.example", "telcolb.io/diameter-origin-realm": "example"},
			Spec{Pool: "defaultPool", Diameter: &api.DiameterSpec{Mode: "relay", OriginHost: "dra.example", OriginRealm: "example"}}, ""},
		{"diameter proxy", map[string]string{"telcolb.io/diameter": "proxy", "telcolb.io/diameter-origin-host": "dra.example", "telcolb.io/diameter-origin-realm": "example", "telcolb.io/diameter-applications": "4, 16777238"},
			Spec{Pool: "defaultPool", Diameter: &api.DiameterSpec{Mode: "proxy", OriginHost: "dra.example", OriginRealm: "example", Applications: []uint32{4, 16777238}}}, ""},
		{"multus-nets", map[string]string{"telcolb.io/multus-nets": "macvlan1,other-ns/macvlan2"}, Spec{Pool: "defaultPool", MultusNets: []string{"macvlan1", "other-ns/macvlan2"}}, ""},
		{"sharing key", map[string]string{"telcolb.io/sharing-key": "n2-vip"}, Spec{Pool: "defaultPool", SharingKey: "n2-vip"}, ""},
		{"controller bookkeeping is ignored", map[string]string{"telcolb.io/allocations": "{}"}, Spec{Pool: "defaultPool"}, ""},
		{"foreign annotations are ignored", map[string]string{"example.com/x": "y", "loxilb.io/lbmode": "nonsense"}, Spec{Pool: "defaultPool"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Parse(tt.ann, testOpts)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(res.Spec, tt.want) {
				t.Fatalf("spec = %+v\nwant   %+v", res.Spec, tt.want)
			}
			joined := strings.Join(res.Warnings, "\n")
			if tt.warn == "" && joined != "" || !strings.Contains(joined, tt.warn) {
				t.Fatalf("warnings = %q, want containing %q", joined, tt.warn)
			}
		})
	}
}

func TestParseInvalidAnnotationsNameTheAnnotation(t *testing.T) {
	tests := []struct {
		name       string
		ann        map[string]string
		annotation string
		reason     string
	}{
		{"unknown pool", map[string]string{"telcolb.io/poolSelect": "nope"}, "telcolb.io/poolSelect", "not configured"},
		{"diameter mode", map[string]string{"telcolb.io/diameter": "redirect"}, "telcolb.io/diameter", "want relay or proxy"},
		{"diameter without identity", map[string]string{"telcolb.io/diameter": "relay"}, "telcolb.io/diameter", "needs telcolb.io/diameter-origin-host"},
		{"diameter origin without diameter", map[string]string{"telcolb.io/diameter-origin-host": "x.example"}, "telcolb.io/diameter-origin-host", "needs telcolb.io/diameter"},
		{"diameter proxy without applications", map[string]string{"telcolb.io/diameter": "proxy", "telcolb.io/diameter-origin-host": "x.example", "telcolb.io/diameter-origin-realm": "example"}, "telcolb.io/diameter", "needs telcolb.io/diameter-applications"},
		{"diameter bad application", map[string]string{"telcolb.io/diameter": "proxy", "telcolb.io/diameter-origin-host": "x.example", "telcolb.io/diameter-origin-realm": "example", "telcolb.io/diameter-applications": "4,gx"}, "telcolb.io/diameter-applications", ""},
		{"bad pool name", map[string]string{"telcolb.io/poolSelect": "a b"}, "telcolb.io/poolSelect", "not a valid pool name"},
		{"too many secondary pools", map[string]string{"telcolb.io/poolSelectSecondary": "pool1,pool2,pool3,pool4"}, "telcolb.io/poolSelectSecondary", "at most 3"},
		{"unknown secondary pool", map[string]string{"telcolb.io/poolSelectSecondary": "pool1,zzz"}, "telcolb.io/poolSelectSecondary", "not configured"},
		{"empty secondary pools", map[string]string{"telcolb.io/poolSelectSecondary": " , "}, "telcolb.io/poolSelectSecondary", "empty"},
		{"too many secondary IPs", map[string]string{"telcolb.io/secondaryIPs": "1.1.1.1,1.1.1.2,1.1.1.3,1.1.1.4"}, "telcolb.io/secondaryIPs", "at most 3"},
		{"bad secondary IP", map[string]string{"telcolb.io/secondaryIPs": "1.1.1.1,banana"}, "telcolb.io/secondaryIPs", "not an IP"},
		{"duplicate secondary IP", map[string]string{"telcolb.io/secondaryIPs": "1.1.1.1,1.1.1.1"}, "telcolb.io/secondaryIPs", "twice"},
		{"multicast secondary IP", map[string]string{"telcolb.io/secondaryIPs": "224.0.0.1"}, "telcolb.io/secondaryIPs", "unicast"},
		{"bad static IP", map[string]string{"telcolb.io/staticIP": "300.1.1.1"}, "telcolb.io/staticIP", "not an IP"},
		{"two v4 static IPs", map[string]string{"telcolb.io/staticIP": "1.1.1.1,1.1.1.2"}, "telcolb.io/staticIP", "one IPv4 and one IPv6"},
		{"static also secondary", map[string]string{"telcolb.io/staticIP": "1.1.1.1", "telcolb.io/secondaryIPs": "1.1.1.1"}, "telcolb.io/staticIP", "also listed"},
		{"static vs ipam", map[string]string{"telcolb.io/staticIP": "1.1.1.1", "telcolb.io/ipam": "ipv6"}, "telcolb.io/staticIP", "does not match ipam"},
		{"unspecified static", map[string]string{"telcolb.io/staticIP": "0.0.0.0"}, "telcolb.io/staticIP", "unicast"},
		{"lbmode", map[string]string{"telcolb.io/lbmode": "2"}, "telcolb.io/lbmode", "want one of default"},
		{"epselect", map[string]string{"telcolb.io/epselect": "random"}, "telcolb.io/epselect", "want one of rr"},
		{"liveness", map[string]string{"telcolb.io/liveness": "maybe"}, "telcolb.io/liveness", "yes or no"},
		{"probetype", map[string]string{"telcolb.io/probetype": "icmp"}, "telcolb.io/probetype", "want one of tcp"},
		{"probeport without probe", map[string]string{"telcolb.io/probeport": "80"}, "telcolb.io/probeport", "probe is off"},
		{"probeport out of range", map[string]string{"telcolb.io/probetype": "tcp", "telcolb.io/probeport": "70000"}, "telcolb.io/probeport", "1 to 65535"},
		{"probeport with ping", map[string]string{"telcolb.io/probetype": "ping", "telcolb.io/probeport": "80"}, "telcolb.io/probeport", "no port"},
		{"probereq with tcp", map[string]string{"telcolb.io/probetype": "tcp", "telcolb.io/probereq": "hi"}, "telcolb.io/probereq", "telcolb.io/probetype is tcp: use http, https or udp"},
		{"probetimeout not shorter than the default interval", map[string]string{"telcolb.io/liveness": "yes", "telcolb.io/probetimeout": "10"}, "telcolb.io/probetimeout", "shorter than the probe interval (5s, the default); set telcolb.io/probeinterval"},
		{"probetimeout not shorter than probeinterval", map[string]string{"telcolb.io/liveness": "yes", "telcolb.io/probeinterval": "3", "telcolb.io/probetimeout": "3"}, "telcolb.io/probetimeout", "(3s, telcolb.io/probeinterval)"},
		{"probeinterval too short", map[string]string{"telcolb.io/liveness": "yes", "telcolb.io/probeinterval": "1"}, "telcolb.io/probeinterval", "2 to 3600"},
		{"http path with blanks", map[string]string{"telcolb.io/probetype": "http", "telcolb.io/probereq": "/a b"}, "telcolb.io/probereq", "whitespace"},
		{"proberesp with probe off", map[string]string{"telcolb.io/liveness": "no", "telcolb.io/proberesp": "ok"}, "telcolb.io/proberesp", "probe is off"},
		{"proberesp too long", map[string]string{"telcolb.io/probetype": "http", "telcolb.io/proberesp": strings.Repeat("x", 2000)}, "telcolb.io/proberesp", "longer than 1024"},
		{"probetimeout zero", map[string]string{"telcolb.io/liveness": "yes", "telcolb.io/probetimeout": "0"}, "telcolb.io/probetimeout", "1 to 3599"},
		{"proberetries negative", map[string]string{"telcolb.io/liveness": "yes", "telcolb.io/proberetries": "-1"}, "telcolb.io/proberetries", "1 to 10"},
		{"timeout text", map[string]string{"telcolb.io/timeout": "1m"}, "telcolb.io/timeout", "integer"},
		{"ipam", map[string]string{"telcolb.io/ipam": "ipv5"}, "telcolb.io/ipam", "want one of ipv4"},
		{"usepodnetwork", map[string]string{"telcolb.io/usepodnetwork": "si"}, "telcolb.io/usepodnetwork", "yes or no"},
		{"n2", map[string]string{"telcolb.io/n2": "maybe"}, "telcolb.io/n2", "yes or no"},
		{"pfcp", map[string]string{"telcolb.io/pfcp": "sometimes"}, "telcolb.io/pfcp", "yes or no"},
		{"multus-nets bad name", map[string]string{"telcolb.io/multus-nets": "MacVlan"}, "telcolb.io/multus-nets", "not a network name"},
		{"multus-nets empty", map[string]string{"telcolb.io/multus-nets": ""}, "telcolb.io/multus-nets", "empty"},
		{"multus-nets duplicate", map[string]string{"telcolb.io/multus-nets": "a,a"}, "telcolb.io/multus-nets", "twice"},
		{"sharing key", map[string]string{"telcolb.io/sharing-key": "-bad-"}, "telcolb.io/sharing-key", "alphanumeric"},
		{"typo", map[string]string{"telcolb.io/lbmod": "fullnat"}, "telcolb.io/lbmod", "unknown telcolb.io annotation"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.ann, testOpts)
			if err == nil {
				t.Fatal("Parse accepted invalid annotations")
			}
			es := Errors(err)
			found := false
			for _, e := range es {
				if e.Annotation == tt.annotation && strings.Contains(e.Reason, tt.reason) {
					found = true
				}
			}
			if !found {
				t.Fatalf("errors %q do not name %s with %q", err, tt.annotation, tt.reason)
			}
			if !strings.Contains(err.Error(), tt.annotation) {
				t.Fatalf("error text %q does not name %s", err, tt.annotation)
			}
		})
	}
}

func TestParseReportsEveryBadAnnotationAtOnce(t *testing.T) {
	_, err := Parse(map[string]string{"telcolb.io/lbmode": "x", "telcolb.io/epselect": "y", "telcolb.io/timeout": "z"}, testOpts)
	es := Errors(err)
	if len(es) != 3 || es[0].Annotation != "telcolb.io/epselect" || es[1].Annotation != "telcolb.io/lbmode" || es[2].Annotation != "telcolb.io/timeout" {
		t.Fatalf("errors = %v", err)
	}
}

func TestLoxilbPrefixOnlyWithMigrationFlag(t *testing.T) {
	ann := map[string]string{"loxilb.io/lbmode": "fullnat", "loxilb.io/poolSelect": "pool1", "loxilb.io/zoneselect": "z1"}
	res, err := Parse(ann, testOpts)
	if err != nil || res.Spec.Mode != "" || res.Spec.Pool != "defaultPool" {
		t.Fatalf("without flag: %+v %v", res.Spec, err)
	}
	opts := testOpts
	opts.AcceptLoxilb = true
	res, err = Parse(ann, opts)
	if err != nil || res.Spec.Mode != "fullnat" || res.Spec.Pool != "pool1" {
		t.Fatalf("with flag: %+v %v", res.Spec, err)
	}
	if !strings.Contains(strings.Join(res.Warnings, "\n"), "loxilb.io/zoneselect is not supported") {
		t.Fatalf("warnings = %v", res.Warnings)
	}
	// telcolb.io wins and says so.
	ann["telcolb.io/lbmode"] = "dsr"
	res, err = Parse(ann, opts)
	if err != nil || res.Spec.Mode != "dsr" || !strings.Contains(strings.Join(res.Warnings, "\n"), "telcolb.io/lbmode wins") {
		t.Fatalf("precedence: %+v %v %v", res.Spec, res.Warnings, err)
	}
	// Errors name the loxilb.io key the user wrote.
	_, err = Parse(map[string]string{"loxilb.io/lbmode": "bogus"}, opts)
	if es := Errors(err); len(es) != 1 || es[0].Annotation != "loxilb.io/lbmode" {
		t.Fatalf("err = %v", err)
	}
}

func TestProbeForFollowsPortProtocol(t *testing.T) {
	p := &ProbeSpec{Retries: 2}
	if got := p.ProbeFor("SCTP"); got.Type != "sctp" || got.Retries != 2 {
		t.Fatalf("got %+v", got)
	}
	p = &ProbeSpec{Type: "http"}
	if got := p.ProbeFor("TCP"); got.Type != "http" {
		t.Fatalf("got %+v", got)
	}
}

func FuzzParse(f *testing.F) {
	for _, n := range Known() {
		f.Add(n, "yes", "lbmode", "fullnat")
	}
	f.Add("secondaryIPs", "1.1.1.1,::1", "staticIP", "1.1.1.1")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		ann := map[string]string{Prefix + k1: v1, LoxilbPrefix + k2: v2}
		res, err := Parse(ann, Options{AcceptLoxilb: true, DefaultPool: "d"})
		if err != nil {
			if len(Errors(err)) == 0 {
				t.Fatalf("error %v carries no *Error", err)
			}
			return
		}
		if len(res.Spec.SecondaryIPs) > MaxSecondary || len(res.Spec.SecondaryPools) > MaxSecondary || len(res.Spec.StaticIPs) > 2 {
			t.Fatalf("limits exceeded: %+v", res.Spec)
		}
	})
}
