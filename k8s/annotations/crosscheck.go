package annotations

import (
	"fmt"
	"strings"

	"github.com/telcolb/telcolb/api"
)

// crosscheck runs every check that involves more than one annotation, once
// all of them are read, and finishes the probe.
func (p *parser) crosscheck(d *draft) {
	s := &p.res.Spec
	if d.secondaryIPs != nil && d.secondaryPools != nil {
		p.warn("%s is set, so %s is ignored", d.secondaryIPs.key, d.secondaryPools.key)
		s.SecondaryPools = nil
	}
	if d.staticIP != nil {
		for _, st := range s.StaticIPs {
			for _, sec := range s.SecondaryIPs {
				if sec == st {
					p.fail(d.staticIP.key, d.staticIP.value, fmt.Sprintf("%s is also listed as a secondary IP", st))
				}
			}
			if s.IPAM != "" && (s.IPAM == IPAMIPv4) != st.Is4() {
				p.fail(d.staticIP.key, d.staticIP.value, fmt.Sprintf("%s does not match ipam mode %s", st, s.IPAM))
			}
		}
	}
	p.probe(d)
	p.crosscheckDiameter(d)
}

// crosscheckDiameter turns the Diameter annotations into Spec.Diameter.
func (p *parser) crosscheckDiameter(d *draft) {
	if d.diameter == nil {
		for _, f := range []*field{d.diamHost, d.diamRealm, d.diamApps} {
			if f != nil {
				p.fail(f.key, f.value, "needs "+Prefix+Diameter+" (relay or proxy)")
			}
		}
		return
	}
	mode := strings.ToLower(d.diameter.value)
	if mode != api.DiameterRelay && mode != api.DiameterProxy {
		p.fail(d.diameter.key, d.diameter.value, "want relay or proxy")
		return
	}
	spec := &api.DiameterSpec{Mode: mode}
	if d.diamHost == nil || d.diamRealm == nil {
		p.fail(d.diameter.key, d.diameter.value, "needs "+Prefix+DiameterOriginHost+" and "+Prefix+DiameterOriginRealm)
		return
	}
	spec.OriginHost, spec.OriginRealm = d.diamHost.value, d.diamRealm.value
	if d.diamApps != nil {
		for _, a := range strings.Split(d.diamApps.value, ",") {
			n, ok := p.number(d.diamApps.key, strings.TrimSpace(a), 1, 1<<32-2)
			if !ok {
				return
			}
			spec.Applications = append(spec.Applications, uint32(n))
		}
	}
	if mode == api.DiameterProxy && len(spec.Applications) == 0 {
		p.fail(d.diameter.key, d.diameter.value, "a proxy needs "+Prefix+DiameterApplications)
		return
	}
	p.res.Spec.Diameter = spec
}

// ignoredOrFail handles an annotation that cannot apply given the others:
// read under loxilb.io/ it is ignored with a note, as kube-loxilb ignores
// it; under telcolb.io/ it is an error, since our own names should say what
// they mean.
func (p *parser) ignoredOrFail(f *field, why, fix string) {
	if f.loxilb {
		p.warn("annotation %s is ignored: %s (kube-loxilb ignores it too)", f.key, why)
		return
	}
	p.fail(f.key, f.value, why+"; "+fix)
}

// probe turns the probe annotations into Spec.Probe.
func (p *parser) probe(d *draft) {
	enabled := d.probeType != ProbeNone && (d.livenessOn || d.typeField != nil)
	prefix := func(f *field) string {
		if f.loxilb {
			return LoxilbPrefix
		}
		return Prefix
	}
	dependents := []*field{d.portField, d.request, d.response, d.timeoutField, d.intervalField, d.retriesField}
	if !enabled {
		for _, f := range dependents {
			if f != nil {
				pf := prefix(f)
				p.ignoredOrFail(f, "the probe is off",
					fmt.Sprintf("set %s%s: \"yes\" or a %s%s other than none", pf, Liveness, pf, ProbeType))
			}
		}
		return
	}
	probe := &ProbeSpec{Type: d.probeType, Retries: d.retries}
	probe.IntervalSeconds = d.interval
	if f := d.portField; f != nil {
		switch {
		case d.probeType == ProbePing:
			p.ignoredOrFail(f, "ping probes have no port", "remove it")
		case f.loxilb && d.typeField == nil:
			p.warn("annotation %s is ignored: kube-loxilb applies a probe port only with %s%s set", f.key, LoxilbPrefix, ProbeType)
		default:
			probe.Port = d.probePort
		}
	}
	for _, f := range []*field{d.request, d.response} {
		if f == nil {
			continue
		}
		switch d.probeType {
		case ProbeHTTP, ProbeHTTPS, ProbeUDP:
		case "":
			p.ignoredOrFail(f, "the probe follows the port's protocol and sends nothing",
				fmt.Sprintf("set %s%s to http, https or udp", prefix(f), ProbeType))
			continue
		default:
			p.ignoredOrFail(f, d.probeType+" probes send no request and read no response",
				fmt.Sprintf("%s is %s: use http, https or udp, or remove %s", d.typeField.key, d.probeType, f.key))
			continue
		}
		v := f.value
		if f == d.request {
			if d.probeType == ProbeHTTP || d.probeType == ProbeHTTPS {
				if strings.ContainsAny(v, " \r\n\t") {
					p.fail(f.key, f.value, "an HTTP path cannot contain whitespace")
					continue
				}
				if !strings.HasPrefix(v, "/") {
					v = "/" + v
				}
			}
			probe.Request = v
		} else {
			probe.Response = v
		}
	}
	loxilbProbe := d.typeField != nil && d.typeField.loxilb || d.typeField == nil && d.livenessLoxilb
	if probe.IntervalSeconds == 0 && loxilbProbe {
		probe.IntervalSeconds = LoxilbProbeIntervalDefault
	}
	if d.timeoutField != nil {
		interval, from := probe.IntervalSeconds, "the default"
		if interval == 0 {
			interval = api.DefaultProbeInterval
		} else if d.intervalField != nil {
			from = d.intervalField.key
		} else {
			from = "kube-loxilb's default for " + LoxilbPrefix + Liveness
		}
		if d.timeout >= interval {
			p.fail(d.timeoutField.key, d.timeoutField.value, fmt.Sprintf("the per-probe timeout must be shorter than the probe interval (%ds, %s); set %s%s to lengthen it",
				interval, from, Prefix, ProbeInterval))
		} else {
			probe.TimeoutSeconds = d.timeout
		}
	}
	p.res.Spec.Probe = probe
}
