package app

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/telcolb/telcolb/api"
)

// ProbeTarget is one health check of one endpoint.
type ProbeTarget struct {
	// Type is one of the api.Probe* types (never none).
	Type string
	// Addr is the endpoint address and the probed port (port unused by ping).
	Addr     netip.AddrPort
	Request  string
	Response string
	Timeout  time.Duration
}

// Prober runs one health check; nil means the endpoint is up.
type Prober interface {
	Probe(ctx context.Context, t ProbeTarget) error
}

// NetProber checks endpoints over the network from the LB node.
type NetProber struct{}

// maxProbeRead bounds what a probe reads looking for Response.
const maxProbeRead = 64 << 10

// Probe implements Prober.
func (NetProber) Probe(ctx context.Context, t ProbeTarget) error {
	if t.Timeout <= 0 {
		return errors.New("probe timeout must be positive")
	}
	ctx, cancel := context.WithTimeout(ctx, t.Timeout)
	defer cancel()
	switch t.Type {
	case api.ProbeTCP:
		return probeTCP(ctx, t)
	case api.ProbeUDP:
		return probeUDP(ctx, t)
	case api.ProbeHTTP, api.ProbeHTTPS:
		return probeHTTP(ctx, t)
	case api.ProbePing:
		return probePing(ctx, t)
	case api.ProbeSCTP:
		return probeSCTP(ctx, t)
	}
	return fmt.Errorf("probe type %q is not supported", t.Type)
}

func probeTCP(ctx context.Context, t ProbeTarget) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", t.Addr.String())
	if err != nil {
		return fmt.Errorf("tcp connect: %w", err)
	}
	return c.Close()
}

func probeUDP(ctx context.Context, t ProbeTarget) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", t.Addr.String())
	if err != nil {
		return fmt.Errorf("udp dial: %w", err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	req := t.Request
	if req == "" {
		// Some payload is needed to provoke a reply or an ICMP error.
		req = "\n"
	}
	if _, err := c.Write([]byte(req)); err != nil {
		return fmt.Errorf("udp send: %w", err)
	}
	buf := make([]byte, maxProbeRead)
	n, err := c.Read(buf)
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return errors.New("udp: port unreachable")
	case errors.Is(err, os.ErrDeadlineExceeded) && t.Response == "":
		// Silence is the normal answer of many UDP services: without an
		// expected response only an ICMP error means down.
		return nil
	case err != nil:
		return fmt.Errorf("udp receive: %w", err)
	}
	if t.Response != "" && !bytes.Contains(buf[:n], []byte(t.Response)) {
		return fmt.Errorf("udp reply does not contain %q", t.Response)
	}
	return nil
}

func probeHTTP(ctx context.Context, t ProbeTarget) error {
	scheme := "http"
	if t.Type == api.ProbeHTTPS {
		scheme = "https"
	}
	path := t.Request
	if path == "" {
		path = "/"
	}
	hc := &http.Client{
		Transport: &http.Transport{
			// Endpoints are addressed by IP and their certificates name the
			// service, so verification would fail for every healthy
			// backend; the probe checks liveness, not identity.
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // see above
			DisableKeepAlives: true,
			Proxy:             nil,
		},
		// 3xx counts as up: following it would probe some other server.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+t.Addr.String()+path, nil)
	if err != nil {
		return fmt.Errorf("http request: %w", err)
	}
	req.Header.Set("User-Agent", "telcolb-probe")
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("http: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 399 {
		return fmt.Errorf("http status %d", resp.StatusCode)
	}
	if t.Response == "" {
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxProbeRead))
	if err != nil {
		return fmt.Errorf("http body: %w", err)
	}
	if !bytes.Contains(body, []byte(t.Response)) {
		return fmt.Errorf("http body does not contain %q", t.Response)
	}
	return nil
}

// probePing sends one ICMP echo over a privileged raw socket. Every raw
// socket sees every echo reply of the host, so replies are matched on
// source, ID and sequence number.
func probePing(ctx context.Context, t ProbeTarget) error {
	addr := t.Addr.Addr()
	network, listen := "ip4:icmp", "0.0.0.0"
	var reqType, replyType icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	proto := 1
	if addr.Is6() {
		network, listen = "ip6:ipv6-icmp", "::"
		reqType, replyType = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
		proto = 58
	}
	c, err := icmp.ListenPacket(network, listen)
	if err != nil {
		return fmt.Errorf("ping: open raw socket: %w", err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	id, seq := rand.IntN(0xffff), rand.IntN(0xffff)
	payload := []byte("telcolb-probe")
	msg := icmp.Message{Type: reqType, Body: &icmp.Echo{ID: id, Seq: seq, Data: payload}}
	wire, err := msg.Marshal(nil)
	if err != nil {
		return fmt.Errorf("ping: encode echo: %w", err)
	}
	dst := &net.IPAddr{IP: addr.AsSlice()}
	if _, err := c.WriteTo(wire, dst); err != nil {
		return fmt.Errorf("ping: send: %w", err)
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("ping: no echo reply: %w", err)
		}
		src, ok := from.(*net.IPAddr)
		if !ok || !src.IP.Equal(dst.IP) {
			continue
		}
		reply, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil || reply.Type != replyType {
			continue
		}
		if echo, ok := reply.Body.(*icmp.Echo); ok && echo.ID == id && echo.Seq == seq && strings.HasPrefix(string(echo.Data), string(payload)) {
			return nil
		}
	}
}
