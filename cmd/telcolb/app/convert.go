package app

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/dataplane"
)

var protoByName = map[string]dataplane.Proto{
	api.ProtocolTCP:  dataplane.ProtoTCP,
	api.ProtocolUDP:  dataplane.ProtoUDP,
	api.ProtocolSCTP: dataplane.ProtoSCTP,
}

var modeByName = map[string]dataplane.Mode{
	"":              dataplane.ModeDefault,
	api.ModeDefault: dataplane.ModeDefault,
	api.ModeOneArm:  dataplane.ModeOneArm,
	api.ModeFullNAT: dataplane.ModeFullNAT,
	api.ModeDSR:     dataplane.ModeDSR,
}

var selectByName = map[string]dataplane.Select{
	"":                   dataplane.SelectRR,
	api.SelectRoundRobin: dataplane.SelectRR,
	api.SelectHash:       dataplane.SelectHash,
	api.SelectPersist:    dataplane.SelectPersist,
	api.SelectLeastConn:  dataplane.SelectLeastConn,
	api.SelectMaglev:     dataplane.SelectMaglev,
}

func protoName(p dataplane.Proto) string {
	switch p {
	case dataplane.ProtoTCP:
		return api.ProtocolTCP
	case dataplane.ProtoUDP:
		return api.ProtocolUDP
	case dataplane.ProtoSCTP:
		return api.ProtocolSCTP
	case dataplane.ProtoICMP:
		return "icmp"
	case dataplane.ProtoICMPv6:
		return "icmpv6"
	}
	return fmt.Sprintf("proto-%d", p)
}

// toDatapath turns a validated service into its datapath rule: one rule
// with every VIP, so that the paths of a multi-homed SCTP association through
// any of them reach the same endpoint (ids[0] is the rule's ID; stores
// written by older daemons may hold more, one per VIP, which are released).
// down[i] is the probe verdict of endpoint i.
func toDatapath(s api.Service, ids []uint32, down []bool) ([]dataplane.Service, error) {
	if len(ids) == 0 {
		return nil, fmt.Errorf("service %s: no datapath ID", s.Name)
	}
	proto, ok := protoByName[s.Protocol]
	if !ok {
		return nil, fmt.Errorf("service %s: unknown protocol %q", s.Name, s.Protocol)
	}
	mode, ok := modeByName[s.Mode]
	if !ok {
		return nil, fmt.Errorf("service %s: unknown mode %q", s.Name, s.Mode)
	}
	sel, ok := selectByName[s.Select]
	if !ok {
		return nil, fmt.Errorf("service %s: unknown select %q", s.Name, s.Select)
	}
	eps := make([]dataplane.Endpoint, len(s.Endpoints))
	for i, ep := range s.Endpoints {
		addr, err := netip.ParseAddr(ep.Address)
		if err != nil {
			return nil, fmt.Errorf("service %s: endpoint %d: %w", s.Name, i, err)
		}
		w := ep.Weight
		if w == 0 {
			w = 1
		}
		eps[i] = dataplane.Endpoint{Addr: addr, Port: ep.Port, Weight: w, Down: i < len(down) && down[i]}
	}
	portEnd := s.PortEnd
	if portEnd == 0 {
		portEnd = s.Port
	}
	vip, err := netip.ParseAddr(s.VIP)
	if err != nil {
		return nil, fmt.Errorf("service %s: vip %q: %w", s.Name, s.VIP, err)
	}
	var secondary []netip.Addr
	for _, v := range s.SecondaryVIPs {
		a, err := netip.ParseAddr(v)
		if err != nil {
			return nil, fmt.Errorf("service %s: secondary vip %q: %w", s.Name, v, err)
		}
		secondary = append(secondary, a)
	}
	return []dataplane.Service{{
		ID:               ids[0],
		VIP:              vip,
		SecondaryVIPs:    secondary,
		PortStart:        s.Port,
		PortEnd:          portEnd,
		Proto:            proto,
		Mode:             mode,
		Select:           sel,
		IdleTimeout:      time.Duration(s.IdleTimeoutSeconds) * time.Second,
		Endpoints:        eps,
		SCTPPathFailover: s.PathFailoverOn(),
		SCTPPathHoldDown: time.Duration(s.SCTPPathHoldDownMillis) * time.Millisecond,
	}}, nil
}

func toAPIConn(c dataplane.Conn, names map[uint32]string) api.Conn {
	name, ok := names[c.ServiceID]
	if !ok {
		// A connection of a service deleted since the dump started, or of
		// rules programmed by something else: still worth showing.
		name = fmt.Sprintf("unknown-id-%d", c.ServiceID)
	}
	out := api.Conn{
		Protocol:         protoName(c.Proto),
		Service:          name,
		Client:           c.Client.String(),
		VIP:              c.VIP.String(),
		Endpoint:         c.Backend.String(),
		Source:           c.Source.String(),
		State:            c.State,
		OrigPackets:      c.OrigPackets,
		OrigBytes:        c.OrigBytes,
		ReplyPackets:     c.ReplyPackets,
		ReplyBytes:       c.ReplyBytes,
		IdleSeconds:      uint32(c.Idle / time.Second),
		ExpiresInSeconds: uint32(c.ExpiresIn / time.Second),
	}
	if c.Proto == dataplane.ProtoSCTP {
		out.VTagClient = fmt.Sprintf("%08x", c.VTagClient)
		out.VTagEndpoint = fmt.Sprintf("%08x", c.VTagEndpoint)
	}
	for _, p := range c.Paths {
		out.Paths = append(out.Paths, api.ConnPath{
			Client: p.Client.String(), VIP: p.VIP.String(), Endpoint: p.Backend.String(), Source: p.Source.String(),
			OrigPackets: p.OrigPackets, OrigBytes: p.OrigBytes, ReplyPackets: p.ReplyPackets, ReplyBytes: p.ReplyBytes,
		})
	}
	if st := c.Steering; st != nil {
		out.Steering = &api.ConnSteering{Count: st.Count, Active: st.Active, From: st.From.String(), To: st.To.String(),
			VIP: st.VIP.String(), SinceSeconds: st.Since.Seconds()}
	}
	return out
}
