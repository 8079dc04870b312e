package api

import (
	"errors"
	"testing"
)

func u32p(v uint32) *uint32 { return &v }

func validAdvertisement() AdvertisementConfig {
	return AdvertisementConfig{
		NodeName: "node-a",
		BGP: &BGPConfig{ASN: 65001, RouterID: "10.0.0.1", Peers: []BGPPeer{
			{Name: "r1", Address: "10.0.0.254", ASN: 65000, BFD: &BFDProfile{ReceiveIntervalMs: 100, TransmitIntervalMs: 100, DetectMultiplier: 3}},
			{Name: "r6", Address: "fd00::fe", ASN: 65000, SourceAddress: "fd00::1"},
		}},
		L2: &L2Config{Members: []L2Member{{Name: "node-a", Address: "10.0.0.1:7946"}, {Name: "node-b", Address: "10.0.0.2:7946"}}},
		Advertisements: []Advertisement{
			{Name: "pub", Mode: AdvertiseBGP, Prefixes: []string{"10.96.0.0/24", "fd96::/64"}, Peers: []string{"r1"}, Communities: []string{"65000:100", "65000:1:2"}, LocalPreference: u32p(200), MED: u32p(10), AggregationLength: 28},
			{Name: "lan", Mode: AdvertiseL2, Prefixes: []string{"192.168.5.0/24"}, Interfaces: []string{"eth0"}},
			// Same range announced both ways is fine: overlap is per mode.
			{Name: "pub-l2", Mode: AdvertiseL2, Prefixes: []string{"10.96.0.0/25"}},
		},
	}
}

func TestValidateAdvertisementAccepts(t *testing.T) {
	c := validAdvertisement()
	if err := ValidateAdvertisementConfig(&c); err != nil {
		t.Fatal(err)
	}
	empty := AdvertisementConfig{}
	if err := ValidateAdvertisementConfig(&empty); err != nil {
		t.Fatalf("empty config (announce nothing): %v", err)
	}
}

func TestValidateAdvertisementRejects(t *testing.T) {
	for _, tc := range []struct {
		field  string
		mutate func(c *AdvertisementConfig)
	}{
		{"nodeName", func(c *AdvertisementConfig) { c.NodeName = "" }},
		{"nodeName", func(c *AdvertisementConfig) { c.NodeName = "Node_A" }},
		{"bgp.asn", func(c *AdvertisementConfig) { c.BGP.ASN = 0 }},
		{"bgp.routerID", func(c *AdvertisementConfig) { c.BGP.RouterID = "fd00::1" }},
		{"bgp.peers[1].name", func(c *AdvertisementConfig) { c.BGP.Peers[1].Name = "r1" }},
		{"bgp.peers[0].address", func(c *AdvertisementConfig) { c.BGP.Peers[0].Address = "10.0.0" }},
		{"bgp.peers[1].address", func(c *AdvertisementConfig) { c.BGP.Peers[1].Address = "10.0.0.254" }},
		{"bgp.peers[0].asn", func(c *AdvertisementConfig) { c.BGP.Peers[0].ASN = 0 }},
		{"bgp.peers[0].holdTimeSeconds", func(c *AdvertisementConfig) { c.BGP.Peers[0].HoldTimeSeconds = 2 }},
		{"bgp.peers[0].keepaliveTimeSeconds", func(c *AdvertisementConfig) { c.BGP.Peers[0].KeepaliveTimeSeconds = 90 }},
		{"bgp.peers[1].sourceAddress", func(c *AdvertisementConfig) { c.BGP.Peers[1].SourceAddress = "10.0.0.1" }},
		{"bgp.peers[0].password", func(c *AdvertisementConfig) { c.BGP.Peers[0].Password = string(make([]byte, 81)) }},
		{"bgp.peers[0].bfd.receiveIntervalMs", func(c *AdvertisementConfig) { c.BGP.Peers[0].BFD.ReceiveIntervalMs = 5 }},
		{"bgp.peers[0].bfd.transmitIntervalMs", func(c *AdvertisementConfig) { c.BGP.Peers[0].BFD.TransmitIntervalMs = 60001 }},
		{"bgp.peers[0].bfd.detectMultiplier", func(c *AdvertisementConfig) { c.BGP.Peers[0].BFD.DetectMultiplier = 256 }},
		{"l2.members", func(c *AdvertisementConfig) { c.L2.Members = nil }},
		{"l2.members", func(c *AdvertisementConfig) { c.L2.Members = c.L2.Members[1:] }},
		{"l2.members[1].name", func(c *AdvertisementConfig) { c.L2.Members[1].Name = "node-a" }},
		{"l2.members[1].address", func(c *AdvertisementConfig) { c.L2.Members[1].Address = "10.0.0.2" }},
		{"l2.members[1].address", func(c *AdvertisementConfig) { c.L2.Members[1].Address = "10.0.0.1:7946" }},
		{"l2.heartbeatIntervalMs", func(c *AdvertisementConfig) { c.L2.HeartbeatIntervalMs = 5 }},
		{"l2.interfaces[0]", func(c *AdvertisementConfig) { c.L2.Interfaces = []string{"a/b"} }},
		{"advertisements[1].name", func(c *AdvertisementConfig) { c.Advertisements[1].Name = "pub" }},
		{"advertisements[0].mode", func(c *AdvertisementConfig) { c.Advertisements[0].Mode = "ospf" }},
		{"advertisements[0].mode", func(c *AdvertisementConfig) { c.BGP = nil; c.Advertisements[0].Peers = nil }},
		{"advertisements[1].mode", func(c *AdvertisementConfig) { c.L2 = nil }},
		{"advertisements[0].prefixes", func(c *AdvertisementConfig) { c.Advertisements[0].Prefixes = nil }},
		{"advertisements[0].prefixes[0]", func(c *AdvertisementConfig) { c.Advertisements[0].Prefixes[0] = "10.96.0.0" }},
		{"advertisements[0].prefixes[0]", func(c *AdvertisementConfig) { c.Advertisements[0].Prefixes[0] = "10.96.0.1/24" }},
		{"advertisements[0].prefixes[1]", func(c *AdvertisementConfig) { c.Advertisements[0].Prefixes[1] = "10.96.0.128/25" }},
		{"advertisements[2].prefixes[0]", func(c *AdvertisementConfig) { c.Advertisements[2].Prefixes[0] = "192.168.0.0/16" }},
		{"advertisements[0].peers[0]", func(c *AdvertisementConfig) { c.Advertisements[0].Peers = []string{"nope"} }},
		{"advertisements[0].communities[1]", func(c *AdvertisementConfig) { c.Advertisements[0].Communities[1] = "65536:1" }},
		{"advertisements[0].communities[1]", func(c *AdvertisementConfig) { c.Advertisements[0].Communities[1] = "65001:1953260032:1" }},
		{"bgp.peers[0].bfd.minimumTTL", func(c *AdvertisementConfig) { c.BGP.Peers[0].BFD = &BFDProfile{MinimumTTL: 250} }},
		{"bgp.peers[0].bfd.minimumTTL", func(c *AdvertisementConfig) { c.BGP.Peers[0].BFD = &BFDProfile{Multihop: true, MinimumTTL: 256} }},
		{"advertisements[0].aggregationLength", func(c *AdvertisementConfig) { c.Advertisements[0].AggregationLength = 16 }},
		{"advertisements[0].aggregationLength", func(c *AdvertisementConfig) { c.Advertisements[0].AggregationLength = 33 }},
		{"advertisements[0].aggregationLengthV6", func(c *AdvertisementConfig) { c.Advertisements[0].AggregationLengthV6 = 48 }},
		{"advertisements[0].interfaces", func(c *AdvertisementConfig) { c.Advertisements[0].Interfaces = []string{"eth0"} }},
		{"advertisements[1].peers", func(c *AdvertisementConfig) { c.Advertisements[1].Peers = []string{"r1"} }},
		{"advertisements[1].med", func(c *AdvertisementConfig) { c.Advertisements[1].MED = u32p(1) }},
		{"advertisements[1].interfaces[0]", func(c *AdvertisementConfig) { c.Advertisements[1].Interfaces = []string{""} }},
	} {
		c := validAdvertisement()
		tc.mutate(&c)
		err := ValidateAdvertisementConfig(&c)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("want an error on %s, got %v", tc.field, err)
		}
	}
}

func TestWithoutSecrets(t *testing.T) {
	c := validAdvertisement()
	c.BGP.Peers[0].Password = "s3cret"
	out := c.WithoutSecrets()
	if out.BGP.Peers[0].Password != "" || c.BGP.Peers[0].Password != "s3cret" {
		t.Fatal("password not removed from the copy only")
	}
}

func TestParseCommunity(t *testing.T) {
	c, err := ParseCommunity("65000:100")
	if err != nil || c.Large || c.Standard != 65000<<16|100 {
		t.Fatalf("%+v %v", c, err)
	}
	c, err = ParseCommunity("4200000000:1:2")
	if err != nil || !c.Large || c.Parts != [3]uint32{4200000000, 1, 2} {
		t.Fatalf("%+v %v", c, err)
	}
	for _, bad := range []string{"", "1", "a:b", "65536:1", "1:2:3:4", "1:4294967296:1", "-1:2"} {
		if _, err := ParseCommunity(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
