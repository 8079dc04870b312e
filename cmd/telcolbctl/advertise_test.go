package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
)

// TestGetBGPBFDVIP: the advertisement tables show the configured peer (not
// established: nothing listens on its port), its BFD session and the VIP
// with the reason it is not announced.
func TestGetBGPBFDVIP(t *testing.T) {
	url, _ := startDaemon(t, "")
	cl, err := api.NewClient(api.ClientConfig{BaseURL: url})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	err = cl.PutAdvertisement(ctx, api.AdvertisementConfig{
		NodeName: "node-a",
		BGP: &api.BGPConfig{ASN: 65001, RouterID: "10.255.0.9", Peers: []api.BGPPeer{{
			Name: "tor1", Address: "127.0.0.1", ASN: 65000, Port: 9, SourceAddress: "127.0.0.9",
			BFD: &api.BFDProfile{ReceiveIntervalMs: 100, TransmitIntervalMs: 100},
		}}},
		Advertisements: []api.Advertisement{{Name: "pub", Mode: api.AdvertiseBGP, Prefixes: []string{"10.96.0.0/24"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.CreateService(ctx, api.Service{Name: "web", VIP: "10.96.0.10", Port: 80, Protocol: "tcp", Endpoints: []api.Endpoint{{Address: "10.0.0.1", Port: 80}}}); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, url, "", "get", "bgp")
	if r.code != 0 {
		t.Fatalf("get bgp: %d %s", r.code, r.stderr)
	}
	l := lines(r.stdout)
	if len(l) != 2 || l[0] != "PEER | ADDRESS | STATE | SINCE | PREFIXES-SENT | BFD" || !strings.HasPrefix(l[1], "tor1 | 127.0.0.1 | ") || strings.Contains(l[1], "established") {
		t.Fatalf("get bgp:\n%s", r.stdout)
	}
	r = runCLI(t, url, "", "get", "bfd", "-o", "json")
	var bfd []api.BFDSessionStatus
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &bfd) != nil || len(bfd) != 1 || bfd[0].Peer != "tor1" {
		t.Fatalf("get bfd: %d %s %s", r.code, r.stdout, r.stderr)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		r = runCLI(t, url, "", "get", "vip")
		l = lines(r.stdout)
		if len(l) == 2 && l[1] == "10.96.0.10 | - | - | no established session or owned interface" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("get vip:\n%s", r.stdout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r = runCLI(t, url, "", "delete", "bgp"); r.code != exitUsage {
		t.Fatalf("delete bgp: %d", r.code)
	}
}
