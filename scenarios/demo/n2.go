package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/l4"
	"github.com/telcolb/telcolb/scenarios/lab"
	"github.com/telcolb/telcolb/scenarios/n2"
)

// The N2 part of the demo: telcolb terminates the gNBs' N2 associations on
// a VIP and steers each UE's NGAP signalling to the AMF holding its context.
// Two gNB simulators and three AMF simulators (real NGAP over userspace
// SCTP, each in its own namespace); UEs register, one AMF is killed, only
// its UEs are released, and every UE's service request comes back with its
// 5G-S-TMSI and lands on its AMF (or, for the dead AMF's UEs, on a live AMF
// of the same set).

const (
	n2UEsPerGNB = 50
	n2SetID     = 0x3f8 // free5GC's amfId cafe00: region 0xca, set 0x3f8
)

func runN2(ctx context.Context, logger *slog.Logger) (err error) {
	step("N2 proxy: a lab with 2 gNB and 3 AMF simulators (real NGAP, userspace SCTP), telcolb in between")
	l, err := lab.Empty(ctx, logger)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := l.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	lb, err := l.AddHost(ctx, "lb")
	if err != nil {
		return err
	}
	if err := lb.DropProtoUnreachable(ctx); err != nil {
		return err
	}
	var gnbHosts, amfHosts []*lab.Host
	var gnbAddrs, amfAddrs []netip.Addr
	for k := 1; k <= 2; k++ {
		h, err := l.AddHost(ctx, fmt.Sprintf("gnb%d", k))
		if err != nil {
			return err
		}
		a, err := n2.Link(ctx, l, lb, h, fmt.Sprintf("ran%d", k), k)
		if err != nil {
			return err
		}
		gnbHosts, gnbAddrs = append(gnbHosts, h), append(gnbAddrs, a)
	}
	for k := 1; k <= 3; k++ {
		h, err := l.AddHost(ctx, fmt.Sprintf("amf%d", k))
		if err != nil {
			return err
		}
		a, err := n2.Link(ctx, l, lb, h, fmt.Sprintf("core%d", k), 10+k)
		if err != nil {
			return err
		}
		amfHosts, amfAddrs = append(amfHosts, h), append(amfAddrs, a)
	}
	vip := netip.MustParseAddr("10.78.100.1")
	if err := lb.AddAddr(ctx, "ran1", netip.PrefixFrom(vip, 32)); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "telcolb-demo-n2-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := n2.BuildCmds(ctx, tmp, "amfsim", "gnbsim"); err != nil {
		return err
	}
	bin, err := l4.Build(ctx, "")
	if err != nil {
		return err
	}
	d, err := l4.StartDaemon(ctx, l4.DaemonConfig{Bin: bin, Host: lb, Interfaces: []string{"ran1", "ran2"},
		StateDir: filepath.Join(tmp, "state"), PinPath: filepath.Join("/sys/fs/bpf", "telcolb-demo-n2-"+l.ID)})
	if err != nil {
		return err
	}
	defer func() {
		if derr := d.Destroy(context.Background()); derr != nil {
			err = errors.Join(err, derr)
		}
	}()

	var amfs []*lab.Proc
	var eps []string
	for k, h := range amfHosts {
		p, err := h.Start(filepath.Join(tmp, "amfsim"), "--name", fmt.Sprintf("amf%d", k+1), "--listen", amfAddrs[k].String()+":38412",
			"--set-id", fmt.Sprint(n2SetID), "--pointer", fmt.Sprint(k+1), "--region", "202")
		if err != nil {
			return err
		}
		if err := p.WaitOutput(ctx, `"event":"listening"`); err != nil {
			return fmt.Errorf("amf%d: %w: %s", k+1, err, p.Stderr())
		}
		amfs = append(amfs, p)
		eps = append(eps, amfAddrs[k].String()+":38412")
	}
	step("creating the N2 service: telcolb terminates N2 on %s:38412 and fronts 3 AMFs", vip)
	if err := ctl(ctx, d, "create", "lb", "amf", "--vip", vip.String(), "--port", "38412", "--protocol", "sctp",
		"--n2", "--select", "rr", "--endpoints", strings.Join(eps, ",")); err != nil {
		return err
	}

	step("2 gNBs connect, NG Setup (answered by the proxy with the merged view of the 3 AMFs), %d UEs register", 2*n2UEsPerGNB)
	lost := filepath.Join(tmp, "lost")
	var gnbs []*lab.Proc
	for k, h := range gnbHosts {
		p, err := h.Start(filepath.Join(tmp, "gnbsim"), "--name", fmt.Sprintf("gnb%d", k+1), "--connect", vip.String()+":38412",
			"--bind", gnbAddrs[k].String(), "--ues", fmt.Sprint(n2UEsPerGNB), "--ran-base", fmt.Sprint(k*100000),
			"--gnb-id", fmt.Sprint(k+1), "--set-id", fmt.Sprint(n2SetID), "--lost-file", lost)
		if err != nil {
			return err
		}
		gnbs = append(gnbs, p)
	}
	for k, p := range gnbs {
		if err := p.WaitOutput(ctx, `"event":"registered"`); err != nil {
			return fmt.Errorf("gnb%d: %w: %s", k+1, err, p.Stderr())
		}
	}
	if _, err := waitN2(ctx, d, func(st api.ServiceStatus) bool { return st.ActiveConnections == 2*n2UEsPerGNB }); err != nil {
		return err
	}
	step("telcolbctl get lb -o wide: UE contexts per AMF in the ACTIVE column")
	if err := ctl(ctx, d, "get", "lb", "-o", "wide"); err != nil {
		return err
	}

	const dead = 2
	step("amf%d crashes (SIGKILL): the proxy releases only its UEs and tells the gNBs its GUAMI is gone", dead)
	before, err := d.Client.GetService(ctx, "amf")
	if err != nil {
		return err
	}
	killed := time.Now()
	if err := amfs[dead-1].Signal(syscall.SIGKILL); err != nil {
		return err
	}
	_ = amfs[dead-1].Wait(ctx)
	after, err := waitN2(ctx, d, func(st api.ServiceStatus) bool { return st.Endpoints[dead-1].ActiveConnections == 0 })
	if err != nil {
		return err
	}
	fmt.Printf("  %v after the kill: UEs per AMF %v -> %v (the others' UEs untouched)\n",
		time.Since(killed).Round(100*time.Millisecond), activePerAMF(before), activePerAMF(after))
	if err := ctl(ctx, d, "get", "lb", "-o", "wide"); err != nil {
		return err
	}

	step("every UE comes back (service request with its 5G-S-TMSI, after paging for the live AMFs' UEs)")
	if err := os.WriteFile(lost, []byte(fmt.Sprint(dead)), 0o600); err != nil {
		return err
	}
	for _, p := range gnbs {
		if err := p.Signal(syscall.SIGUSR1); err != nil {
			return err
		}
	}
	var greps []n2.GNBReport
	for k, p := range gnbs {
		if err := p.Wait(ctx); err != nil {
			return fmt.Errorf("gnb%d: %w: %s", k+1, err, p.Stderr())
		}
		var r n2.GNBReport
		if err := p.LastJSON("report", &r); err != nil {
			return err
		}
		greps = append(greps, r)
	}
	var areps []n2.AMFReport
	for k, p := range amfs {
		if k+1 == dead {
			continue
		}
		if err := p.Signal(syscall.SIGTERM); err != nil {
			return err
		}
		_ = p.Wait(ctx)
		var r n2.AMFReport
		if err := p.LastJSON("report", &r); err != nil {
			return err
		}
		areps = append(areps, r)
	}
	v := n2.Check(greps, areps, dead)
	fmt.Printf("  registered per AMF pointer: %v\n", v.Registered)
	fmt.Printf("  service requests that reached the AMF their 5G-S-TMSI names: %d of %d\n", v.ServiceRequests, 2*n2UEsPerGNB-v.Registered[dead])
	fmt.Printf("  UEs of the dead amf%d that came back on a live AMF of its set: %d of %d\n", dead, v.Rehomed, v.Registered[dead])
	if len(v.Problems) > 0 {
		return fmt.Errorf("N2 check: %s", strings.Join(v.Problems, "; "))
	}
	return nil
}

// waitN2 polls the N2 service until ok or 30 s pass.
func waitN2(ctx context.Context, d *l4.Daemon, ok func(api.ServiceStatus) bool) (api.ServiceStatus, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := d.Client.GetService(ctx, "amf")
		if err == nil && ok(st) {
			return st, nil
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("N2 service did not reach the expected state: %+v (%v)", st.Endpoints, err)
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func activePerAMF(st api.ServiceStatus) []uint64 {
	var out []uint64
	for _, e := range st.Endpoints {
		out = append(out, e.ActiveConnections)
	}
	return out
}
