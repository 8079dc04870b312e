package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/telcolb/telcolb/api"
)

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 3, ' ', 0) }

func row(tw io.Writer, cols ...any) {
	parts := make([]string, len(cols))
	for i, c := range cols {
		parts[i] = fmt.Sprint(c)
	}
	fmt.Fprintln(tw, strings.Join(parts, "\t"))
}

func ports(s api.Service) string {
	if s.PortEnd != 0 && s.PortEnd != s.Port {
		return fmt.Sprintf("%d-%d", s.Port, s.PortEnd)
	}
	return fmt.Sprint(s.Port)
}

func vips(s api.Service) string {
	return strings.Join(append([]string{s.VIP}, s.SecondaryVIPs...), ",")
}

func orDefault(v, d string) string {
	if v == "" {
		return d
	}
	return v
}

// modeOf shows "n2" for an N2 proxy service, whose ACTIVE columns count UE
// contexts (per AMF endpoint in -o wide) rather than connections, and
// "pfcp" for an N4 proxy service, whose ACTIVE columns count PFCP sessions
// (per UPF endpoint in -o wide), and "diameter" for a Diameter agent,
// whose ACTIVE columns count Session-Id bindings (per server in -o wide).
func modeOf(s api.Service) string {
	if s.N2 {
		return "n2"
	}
	if s.PFCP {
		return "pfcp"
	}
	if s.Diameter != nil {
		return "diameter"
	}
	return orDefault(s.Mode, api.ModeDefault)
}

func health(healthy bool) string {
	if healthy {
		return "up"
	}
	return "down"
}

func printServices(w io.Writer, list []api.ServiceStatus, wide bool) error {
	tw := table(w)
	if !wide {
		row(tw, "NAME", "VIP", "PORT", "PROTO", "MODE", "SELECT", "ENDPOINTS", "ACTIVE", "PACKETS", "BYTES")
		for _, st := range list {
			s := st.Service
			up := 0
			for _, ep := range st.Endpoints {
				if ep.Healthy {
					up++
				}
			}
			row(tw, s.Name, vips(s), ports(s), s.Protocol, modeOf(s), orDefault(s.Select, api.SelectRoundRobin),
				fmt.Sprintf("%d/%d up", up, len(st.Endpoints)), st.ActiveConnections, st.Packets, st.Bytes)
		}
		return tw.Flush()
	}
	row(tw, "NAME", "VIP", "PORT", "PROTO", "MODE", "SELECT", "PROBE", "ENDPOINT", "WEIGHT", "HEALTH", "PACKETS", "BYTES", "SESSIONS", "ACTIVE")
	for _, st := range list {
		s := st.Service
		probe := "none"
		if s.Probe != nil {
			probe = s.Probe.Type
		}
		for _, ep := range st.Endpoints {
			row(tw, s.Name, vips(s), ports(s), s.Protocol, modeOf(s), orDefault(s.Select, api.SelectRoundRobin), probe,
				formatEndpoint(api.Endpoint{Address: ep.Address, Port: ep.Port}), ep.Weight, health(ep.Healthy), ep.Packets, ep.Bytes, ep.Sessions, ep.ActiveConnections)
		}
	}
	return tw.Flush()
}

func printConns(w io.Writer, conns []api.Conn, wide bool) error {
	tw := table(w)
	head := []any{"PROTO", "CLIENT", "VIP", "ENDPOINT", "SOURCE", "STATE", "PACKETS", "BYTES", "IDLE"}
	if wide {
		head = append(head, "SERVICE", "EXPIRES", "VTAGS")
	}
	row(tw, head...)
	for _, c := range conns {
		cols := []any{c.Protocol, c.Client, c.VIP, c.Endpoint, c.Source, c.State,
			fmt.Sprintf("%d/%d", c.OrigPackets, c.ReplyPackets), fmt.Sprintf("%d/%d", c.OrigBytes, c.ReplyBytes),
			time.Duration(c.IdleSeconds) * time.Second}
		if wide {
			vt := "-"
			if c.VTagClient != "" || c.VTagEndpoint != "" {
				vt = c.VTagClient + "/" + c.VTagEndpoint
			}
			cols = append(cols, c.Service, time.Duration(c.ExpiresInSeconds)*time.Second, vt)
		}
		row(tw, cols...)
		// Secondary paths of a multi-homed SCTP association, indented
		// under it with their own counters.
		for _, p := range c.Paths {
			row(tw, "  path", p.Client, p.VIP, p.Endpoint, p.Source, "",
				fmt.Sprintf("%d/%d", p.OrigPackets, p.ReplyPackets), fmt.Sprintf("%d/%d", p.OrigBytes, p.ReplyBytes), "")
		}
		// SCTP path failover: the endpoint's packets toward From go to
		// To (from VIP), since how long, and how many times it happened.
		if st := c.Steering; st != nil {
			state, since := "ended", "-"
			if st.Active {
				state = "steering"
				since = (time.Duration(st.SinceSeconds*float64(time.Second)) / time.Millisecond * time.Millisecond).String()
			}
			row(tw, "  steer", st.From+" -> "+st.To, st.VIP, "", "", state, fmt.Sprintf("%d times", st.Count), "", since)
		}
	}
	return tw.Flush()
}

// endpointRow is one line of "get ep -o json".
type endpointRow struct {
	Service string `json:"service"`
	api.EndpointStatus
}

func endpointRows(list []api.ServiceStatus) []endpointRow {
	out := []endpointRow{}
	for _, st := range list {
		for _, ep := range st.Endpoints {
			out = append(out, endpointRow{Service: st.Service.Name, EndpointStatus: ep})
		}
	}
	return out
}

func printEndpoints(w io.Writer, list []api.ServiceStatus) error {
	tw := table(w)
	row(tw, "SERVICE", "ENDPOINT", "WEIGHT", "HEALTH", "ACTIVE", "SESSIONS", "LAST-ERROR")
	for _, r := range endpointRows(list) {
		row(tw, r.Service, formatEndpoint(api.Endpoint{Address: r.Address, Port: r.Port}), r.Weight, health(r.Healthy),
			r.ActiveConnections, r.Sessions, orDefault(r.LastProbeError, "-"))
	}
	return tw.Flush()
}

func printHealth(w io.Writer, h api.Health) error {
	tw := table(w)
	row(tw, "STATUS", "SERVICES", "ATTACH", "INTERFACES")
	row(tw, h.Status, h.Services, orDefault(h.AttachMode, "-"), orDefault(strings.Join(h.Interfaces, ","), "-"))
	return tw.Flush()
}
