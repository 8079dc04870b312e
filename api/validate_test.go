package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func validService() Service {
	return Service{
		Name:     "ns.web.80-tcp",
		VIP:      "10.96.0.10",
		Port:     80,
		Protocol: ProtocolTCP,
		Endpoints: []Endpoint{
			{Address: "10.0.0.1", Port: 8080},
			{Address: "10.0.0.2", Port: 8080, Weight: 5},
		},
	}
}

func manyEndpoints(n int) []Endpoint {
	eps := make([]Endpoint, n)
	for i := range eps {
		eps[i] = Endpoint{Address: fmt.Sprintf("10.1.%d.%d", i/250, i%250+1), Port: 80}
	}
	return eps
}

func TestValidateAcceptsValidServices(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Service)
	}{
		{"minimal tcp", func(*Service) {}},
		{"maglev selection", func(s *Service) { s.Select = SelectMaglev }},
		{"link-local when asked", func(s *Service) {
			s.AllowLinkLocal = true
			s.VIP = "169.254.10.1"
			s.Endpoints = []Endpoint{{Address: "169.254.10.2", Port: 80}}
		}},
		{"n2 with a loopback AMF", func(s *Service) {
			s.Protocol, s.N2, s.Port = ProtocolSCTP, true, 38412
			s.Endpoints = []Endpoint{{Address: "127.0.0.1", Port: 38412}}
		}},
		// The proxies terminate the VIP in userspace: the datapath, which
		// never sees loopback traffic, is not involved.
		{"pfcp on a loopback VIP toward a loopback UPF", func(s *Service) {
			s.Protocol, s.PFCP, s.Port, s.VIP = ProtocolUDP, true, 8805, "127.0.0.9"
			s.Endpoints = []Endpoint{{Address: "127.0.0.10", Port: 8805}}
		}},
		{"ipv6 everywhere", func(s *Service) {
			s.VIP = "2001:db8::10"
			s.Endpoints = []Endpoint{{Address: "2001:db8::1", Port: 80}, {Address: "fd00::2", Port: 80}}
		}},
		{"nat64: ipv6 vip with ipv4 endpoints", func(s *Service) {
			s.VIP = "2001:db8::10"
			s.Mode = ModeFullNAT
		}},
		{"nat64 mixed with ipv6 endpoints", func(s *Service) {
			s.VIP = "2001:db8::10"
			s.Endpoints = []Endpoint{{Address: "10.0.0.1", Port: 80}, {Address: "fd00::2", Port: 80}}
		}},
		{"sctp multi-homed n2", func(s *Service) {
			s.Protocol = ProtocolSCTP
			s.Port = 38412
			s.SecondaryVIPs = []string{"10.96.1.10", "10.96.2.10", "10.96.3.10"}
			s.N2 = true
		}},
		{"pfcp n4 proxy", func(s *Service) {
			s.Protocol, s.Port, s.PFCP = ProtocolUDP, 8805, true
		}},
		{"pfcp steering by DNN and slice", func(s *Service) {
			s.Protocol, s.Port, s.PFCP = ProtocolUDP, 8805, true
			s.PFCPSteering = []PFCPSteeringRule{{DNN: "ims", Endpoints: []string{s.Endpoints[0].Address}},
				{SNSSAI: "1-010203", NetworkInstance: "internet", Endpoints: []string{s.Endpoints[0].Address + ":8080"}}}
		}},
		{"dsr with port 0", func(s *Service) {
			s.Mode = ModeDSR
			s.Endpoints = []Endpoint{{Address: "10.0.0.1"}, {Address: "10.0.0.2", Port: 80}}
		}},
		{"port range keeping client port", func(s *Service) {
			s.PortEnd = 80 + MaxPortRange - 1
			s.Endpoints = []Endpoint{{Address: "10.0.0.1"}}
		}},
		{"dsr range", func(s *Service) {
			s.Mode = ModeDSR
			s.PortEnd = 90
			s.Endpoints = []Endpoint{{Address: "10.0.0.1"}}
		}},
		{"portEnd equal to port", func(s *Service) { s.PortEnd = 80 }},
		{"64 endpoints", func(s *Service) { s.Endpoints = manyEndpoints(MaxEndpoints) }},
		{"max weight", func(s *Service) { s.Endpoints[0].Weight = MaxWeight }},
		{"every mode and select", func(s *Service) { s.Mode = ModeFullNAT; s.Select = SelectLeastConn }},
		{"24h idle timeout", func(s *Service) { s.IdleTimeoutSeconds = MaxIdleTimeoutSeconds }},
		{"http probe", func(s *Service) {
			s.Probe = &Probe{Type: ProbeHTTP, Request: "/healthz", Response: "ok", IntervalSeconds: 3, TimeoutSeconds: 2, Retries: 3}
		}},
		{"udp probe", func(s *Service) {
			s.Protocol = ProtocolUDP
			s.Probe = &Probe{Type: ProbeUDP, Request: "ping", Response: "pong"}
		}},
		{"ping probe", func(s *Service) { s.Probe = &Probe{Type: ProbePing} }},
		{"none probe", func(s *Service) { s.Probe = &Probe{Type: ProbeNone} }},
		{"probe port with port-0 endpoints", func(s *Service) {
			s.Mode = ModeDSR
			s.Endpoints = []Endpoint{{Address: "10.0.0.1"}}
			s.Probe = &Probe{Type: ProbeTCP, Port: 80}
		}},
		{"short interval takes shorter default timeout", func(s *Service) { s.Probe = &Probe{Type: ProbeTCP, IntervalSeconds: 2} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := validService()
			tt.mutate(&s)
			if err := Validate(&s); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			SetDefaults(&s)
			if err := Validate(&s); err != nil {
				t.Fatalf("Validate after SetDefaults: %v", err)
			}
		})
	}
}

func TestValidateRejectsEachRuleWithItsField(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Service)
		field   string
		message string // substring
	}{
		{"empty name", func(s *Service) { s.Name = "" }, "name", "required"},
		{"long name", func(s *Service) { s.Name = strings.Repeat("a", 254) }, "name", "longer than 253"},
		{"uppercase name", func(s *Service) { s.Name = "Web" }, "name", "only lowercase"},
		{"name with slash", func(s *Service) { s.Name = "a/b" }, "name", "only lowercase"},
		{"name starting with dot", func(s *Service) { s.Name = ".web" }, "name", "start and end"},
		{"name ending with dash", func(s *Service) { s.Name = "web-" }, "name", "start and end"},
		{"missing vip", func(s *Service) { s.VIP = "" }, "vip", "required"},
		{"bad vip", func(s *Service) { s.VIP = "10.0.0.300" }, "vip", "not an IP address"},
		{"vip with zone", func(s *Service) { s.VIP = "fe80::1%eth0" }, "vip", "zoned"},
		{"loopback vip", func(s *Service) { s.VIP = "127.0.0.1" }, "vip", "loopback"},
		{"loopback ipv6 vip", func(s *Service) { s.VIP = "::1"; s.Endpoints = []Endpoint{{Address: "2001:db8::1", Port: 80}} }, "vip", "loopback"},
		{"broadcast vip", func(s *Service) { s.VIP = "255.255.255.255" }, "vip", "broadcast"},
		{"link-local vip", func(s *Service) { s.VIP = "169.254.1.1" }, "vip", "allowLinkLocal"},
		{"link-local secondary vip", func(s *Service) { s.Protocol = ProtocolSCTP; s.SecondaryVIPs = []string{"169.254.1.1"} }, "secondaryVIPs[0]", "link-local"},
		{"loopback endpoint", func(s *Service) { s.Endpoints[0].Address = "127.0.0.2" }, "endpoints[0].address", "loopback"},
		{"link-local endpoint", func(s *Service) { s.Endpoints[1].Address = "169.254.7.7" }, "endpoints[1].address", "link-local"},
		{"multicast endpoint", func(s *Service) { s.Endpoints[0].Address = "224.0.0.5" }, "endpoints[0].address", "multicast"},
		{"endpoint equal to the vip", func(s *Service) { s.Endpoints[1].Address = s.VIP }, "endpoints[1].address", "is a VIP"},
		{"endpoint equal to a secondary vip", func(s *Service) {
			s.Protocol = ProtocolSCTP
			s.SecondaryVIPs = []string{"10.96.1.10"}
			s.Endpoints[0].Address = "10.96.1.10"
		}, "endpoints[0].address", "is a VIP"},
		{"mapped vip", func(s *Service) { s.VIP = "::ffff:10.0.0.1" }, "vip", "IPv4 form 10.0.0.1"},
		{"unspecified vip", func(s *Service) { s.VIP = "0.0.0.0" }, "vip", "unspecified"},
		{"multicast vip", func(s *Service) { s.VIP = "224.0.0.1" }, "vip", "multicast"},
		{"four secondary vips", func(s *Service) {
			s.SecondaryVIPs = []string{"10.9.0.1", "10.9.0.2", "10.9.0.3", "10.9.0.4"}
		}, "secondaryVIPs", "at most 3"},
		{"bad secondary vip", func(s *Service) { s.SecondaryVIPs = []string{"10.9.0.1", "x"} }, "secondaryVIPs[1]", "not an IP address"},
		{"secondary vip other family", func(s *Service) { s.SecondaryVIPs = []string{"2001:db8::1"} }, "secondaryVIPs[0]", "share one family"},
		{"secondary vip equals vip", func(s *Service) { s.SecondaryVIPs = []string{"10.96.0.10"} }, "secondaryVIPs[0]", "repeats the primary"},
		{"duplicate secondary vips", func(s *Service) { s.SecondaryVIPs = []string{"10.9.0.1", "10.9.0.1"} }, "secondaryVIPs[1]", "listed twice"},
		{"sctp multi-homing in onearm mode", func(s *Service) {
			s.Protocol, s.Mode, s.SecondaryVIPs = ProtocolSCTP, ModeOneArm, []string{"10.9.0.1"}
		}, "secondaryVIPs", "needs mode default or fullnat"},
		{"sctp multi-homing in dsr mode", func(s *Service) {
			s.Protocol, s.Mode, s.SecondaryVIPs = ProtocolSCTP, ModeDSR, []string{"10.9.0.1"}
		}, "secondaryVIPs", "needs mode default or fullnat"},
		{"port 0", func(s *Service) { s.Port = 0 }, "port", "required"},
		{"portEnd below port", func(s *Service) { s.PortEnd = 79 }, "portEnd", "below port"},
		{"range too wide", func(s *Service) { s.Port = 1; s.PortEnd = MaxPortRange + 1 }, "portEnd", "at most 4096"},
		{"missing protocol", func(s *Service) { s.Protocol = "" }, "protocol", "required"},
		{"bad protocol", func(s *Service) { s.Protocol = "TCP" }, "protocol", "not one of"},
		{"bad mode", func(s *Service) { s.Mode = "nat" }, "mode", "not one of"},
		{"bad select", func(s *Service) { s.Select = "random" }, "select", "not one of"},
		{"bad sctp path failover", func(s *Service) { s.Protocol, s.SCTPPathFailover = ProtocolSCTP, "yes" }, "sctpPathFailover", "not one of on, off"},
		{"sctp path failover on tcp", func(s *Service) { s.SCTPPathFailover = SCTPPathFailoverOn }, "sctpPathFailover", "only for protocol sctp"},
		{"sctp path hold-down over a minute", func(s *Service) {
			s.Protocol, s.SCTPPathHoldDownMillis = ProtocolSCTP, MaxSCTPPathHoldDownMillis+1
		}, "sctpPathHoldDownMillis", "maximum of 60000"},
		{"sctp path hold-down on udp", func(s *Service) { s.Protocol, s.SCTPPathHoldDownMillis = ProtocolUDP, 500 }, "sctpPathHoldDownMillis", "only for protocol sctp"},
		{"idle timeout over 24h", func(s *Service) { s.IdleTimeoutSeconds = MaxIdleTimeoutSeconds + 1 }, "idleTimeoutSeconds", "24h"},
		{"no endpoints", func(s *Service) { s.Endpoints = nil }, "endpoints", "at least one"},
		{"65 endpoints", func(s *Service) { s.Endpoints = manyEndpoints(MaxEndpoints + 1) }, "endpoints", "at most 64"},
		{"bad endpoint address", func(s *Service) { s.Endpoints[1].Address = "web-1" }, "endpoints[1].address", "not an IP address"},
		{"missing endpoint address", func(s *Service) { s.Endpoints[0].Address = "" }, "endpoints[0].address", "required"},
		{"nat64 endpoint in dsr mode", func(s *Service) {
			s.VIP = "2001:db8::10"
			s.Mode = ModeDSR
			s.Endpoints = []Endpoint{{Address: "10.0.0.1", Port: 80}}
		}, "endpoints[0].address", "dsr mode cannot"},
		{"ipv6 endpoint for ipv4 vip", func(s *Service) { s.Endpoints[1].Address = "2001:db8::1" }, "endpoints[1].address", "share the vip's family"},
		{"port 0 without dsr or range", func(s *Service) { s.Endpoints[0].Port = 0 }, "endpoints[0].port", "only allowed in dsr mode or with a port range"},
		{"dsr with other port", func(s *Service) { s.Mode = ModeDSR; s.Endpoints[0].Port = 81 }, "endpoints[0].port", "0 or the service port 80"},
		{"dsr range with port", func(s *Service) {
			s.Mode = ModeDSR
			s.PortEnd = 90
			s.Endpoints = []Endpoint{{Address: "10.0.0.1", Port: 80}}
		}, "endpoints[0].port", "must be 0 for a dsr port range"},
		{"weight over 100", func(s *Service) { s.Endpoints[1].Weight = 101 }, "endpoints[1].weight", "maximum of 100"},
		{"duplicate endpoint", func(s *Service) { s.Endpoints[1] = s.Endpoints[0] }, "endpoints[1]", "duplicates endpoints[0]"},
		{"missing probe type", func(s *Service) { s.Probe = &Probe{} }, "probe.type", "required"},
		{"bad probe type", func(s *Service) { s.Probe = &Probe{Type: "grpc"} }, "probe.type", "not one of"},
		{"sctp probe with a request", func(s *Service) { s.Probe = &Probe{Type: ProbeSCTP, Request: "x"} }, "probe.request", "sctp probes send no request"},
		{"probe needs a port", func(s *Service) {
			s.Mode = ModeDSR
			s.Endpoints = []Endpoint{{Address: "10.0.0.1"}}
			s.Probe = &Probe{Type: ProbeTCP}
		}, "probe.port", "endpoints[0] has port 0"},
		{"ping with port", func(s *Service) { s.Probe = &Probe{Type: ProbePing, Port: 7} }, "probe.port", "no port"},
		{"tcp probe with request", func(s *Service) { s.Probe = &Probe{Type: ProbeTCP, Request: "x"} }, "probe.request", "send no request"},
		{"ping probe with response", func(s *Service) { s.Probe = &Probe{Type: ProbePing, Response: "x"} }, "probe.response", "read no response"},
		{"http path without slash", func(s *Service) { s.Probe = &Probe{Type: ProbeHTTP, Request: "healthz"} }, "probe.request", "start with '/'"},
		{"http path with space", func(s *Service) { s.Probe = &Probe{Type: ProbeHTTPS, Request: "/a b"} }, "probe.request", "whitespace"},
		{"udp request too long", func(s *Service) {
			s.Probe = &Probe{Type: ProbeUDP, Request: strings.Repeat("x", MaxProbePayloadLength+1)}
		}, "probe.request", "longer than 1024"},
		{"response too long", func(s *Service) {
			s.Probe = &Probe{Type: ProbeUDP, Response: strings.Repeat("x", MaxProbePayloadLength+1)}
		}, "probe.response", "longer than 1024"},
		{"interval 1", func(s *Service) { s.Probe = &Probe{Type: ProbeTCP, IntervalSeconds: 1} }, "probe.intervalSeconds", "at least 2"},
		{"interval over an hour", func(s *Service) { s.Probe = &Probe{Type: ProbeTCP, IntervalSeconds: 3601} }, "probe.intervalSeconds", "maximum of 3600"},
		{"timeout equal to interval", func(s *Service) {
			s.Probe = &Probe{Type: ProbeTCP, IntervalSeconds: 3, TimeoutSeconds: 3}
		}, "probe.timeoutSeconds", "shorter than the interval"},
		{"timeout over default interval", func(s *Service) { s.Probe = &Probe{Type: ProbeTCP, TimeoutSeconds: 6} }, "probe.timeoutSeconds", "shorter than the interval (5s)"},
		{"too many retries", func(s *Service) { s.Probe = &Probe{Type: ProbeTCP, Retries: 11} }, "probe.retries", "maximum of 10"},
		{"n2 over tcp", func(s *Service) { s.N2 = true }, "n2", "needs protocol sctp"},
		{"pfcp over tcp", func(s *Service) { s.PFCP, s.Port = true, 8805 }, "pfcp", "needs protocol udp"},
		{"pfcp on another port", func(s *Service) { s.PFCP, s.Protocol = true, ProtocolUDP }, "port", "port 8805"},
		{"pfcp and n2", func(s *Service) { s.PFCP, s.N2, s.Protocol = true, true, ProtocolSCTP }, "pfcp", "not both"},
		{"steering without pfcp", func(s *Service) { s.PFCPSteering = []PFCPSteeringRule{{DNN: "x", Endpoints: []string{"10.0.0.1"}}} }, "pfcpSteering", "only a PFCP service"},
		{"steering matching nothing", func(s *Service) {
			s.PFCP, s.Protocol, s.Port = true, ProtocolUDP, 8805
			s.PFCPSteering = []PFCPSteeringRule{{Endpoints: []string{s.Endpoints[0].Address}}}
		}, "pfcpSteering[0]", "matches nothing"},
		{"steering bad slice", func(s *Service) {
			s.PFCP, s.Protocol, s.Port = true, ProtocolUDP, 8805
			s.PFCPSteering = []PFCPSteeringRule{{SNSSAI: "300", Endpoints: []string{s.Endpoints[0].Address}}}
		}, "pfcpSteering[0].snssai", "SST (0-255)"},
		{"steering unknown endpoint", func(s *Service) {
			s.PFCP, s.Protocol, s.Port = true, ProtocolUDP, 8805
			s.PFCPSteering = []PFCPSteeringRule{{DNN: "ims", Endpoints: []string{s.Endpoints[0].Address, "192.0.2.99"}}}
		}, "pfcpSteering[0].endpoints[1]", "not one of the service's endpoints"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := validService()
			tt.mutate(&s)
			err := Validate(&s)
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Validate = %v, want a *FieldError", err)
			}
			if fe.Field != tt.field {
				t.Errorf("field = %q, want %q (message %q)", fe.Field, tt.field, fe.Message)
			}
			if !strings.Contains(fe.Message, tt.message) {
				t.Errorf("message = %q, want it to contain %q", fe.Message, tt.message)
			}
		})
	}
}

func TestValidateNilService(t *testing.T) {
	if err := Validate(nil); err == nil {
		t.Fatal("Validate(nil) = nil, want an error")
	}
}

func TestSetDefaultsFillsOptionalFields(t *testing.T) {
	s := validService()
	s.PortEnd = s.Port
	s.Probe = &Probe{Type: ProbeTCP}
	SetDefaults(&s)
	if s.Mode != ModeDefault || s.Select != SelectRoundRobin || s.PortEnd != 0 {
		t.Errorf("mode/select/portEnd = %q/%q/%d", s.Mode, s.Select, s.PortEnd)
	}
	if s.Endpoints[0].Weight != 1 || s.Endpoints[1].Weight != 5 {
		t.Errorf("weights = %d,%d want 1,5", s.Endpoints[0].Weight, s.Endpoints[1].Weight)
	}
	want := Probe{Type: ProbeTCP, IntervalSeconds: DefaultProbeInterval, TimeoutSeconds: DefaultProbeTimeout, Retries: DefaultProbeRetries}
	if *s.Probe != want {
		t.Errorf("probe = %+v, want %+v", *s.Probe, want)
	}
	s.Probe = &Probe{Type: ProbeNone}
	SetDefaults(&s)
	if s.Probe != nil {
		t.Errorf("probe none kept: %+v", s.Probe)
	}
}

// FuzzValidate feeds arbitrary service documents through decoding,
// validation and defaulting: nothing may panic, and a valid spec must stay
// valid once defaulted (the daemon stores the defaulted form).
func FuzzValidate(f *testing.F) {
	seed, _ := json.Marshal(validService())
	f.Add(seed)
	f.Add([]byte(`{"name":"a","vip":"::1","port":1,"portEnd":2,"protocol":"udp","mode":"dsr","endpoints":[{"address":"::2"}],"probe":{"type":"udp"}}`))
	f.Add([]byte(`{"name":"x","vip":"1.1.1.1","secondaryVIPs":["1.1.1.1"],"endpoints":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var s Service
		if json.Unmarshal(data, &s) != nil {
			return
		}
		err := Validate(&s)
		if err == nil {
			SetDefaults(&s)
			if err := Validate(&s); err != nil {
				t.Fatalf("valid spec invalid after SetDefaults: %v (%s)", err, data)
			}
			return
		}
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Message == "" {
			t.Fatalf("error %v is not a *FieldError with a message", err)
		}
	})
}

// Path failover is on by default exactly for SCTP services with secondary
// VIPs or in mode onearm; "on" and "off" override that, and it never applies to TCP or UDP.
func TestPathFailoverDefault(t *testing.T) {
	for _, c := range []struct {
		proto, failover string
		secondary       []string
		want            bool
		mode            string
	}{
		{ProtocolSCTP, "", []string{"10.9.0.1"}, true, ""},
		{ProtocolSCTP, "", nil, false, ""},
		{ProtocolSCTP, SCTPPathFailoverOff, []string{"10.9.0.1"}, false, ""},
		{ProtocolSCTP, SCTPPathFailoverOn, nil, true, ""},
		{ProtocolTCP, "", []string{"10.9.0.1"}, false, ""},
		{ProtocolSCTP, "", nil, true, ModeOneArm},
		{ProtocolSCTP, SCTPPathFailoverOff, nil, false, ModeOneArm},
		{ProtocolTCP, "", nil, false, ModeOneArm},
	} {
		s := Service{Protocol: c.proto, SCTPPathFailover: c.failover, SecondaryVIPs: c.secondary, Mode: c.mode}
		if got := s.PathFailoverOn(); got != c.want {
			t.Errorf("%s failover=%q secondary=%v: on=%v, want %v", c.proto, c.failover, c.secondary, got, c.want)
		}
	}
}
