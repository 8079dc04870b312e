package n4

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/telcolb/telcolb/l7parse/pfcp"
)

// rule is a SteeringRule with its UPFs as a mask over Machine.upfs.
type rule struct {
	SteeringRule
	mask []bool
}

var snssaiRE = regexp.MustCompile(`^([0-9]{1,3})(-[0-9a-f]{6})?$`)

// compileRules checks the steering rules against the UPFs.
func compileRules(rules []SteeringRule, byName map[string]int) ([]rule, error) {
	var out []rule
	for i, r := range rules {
		r.DNN, r.SNSSAI, r.NetworkInstance = strings.ToLower(r.DNN), strings.ToLower(r.SNSSAI), strings.ToLower(r.NetworkInstance)
		if r.DNN == "" && r.SNSSAI == "" && r.NetworkInstance == "" {
			return nil, fmt.Errorf("n4: steering[%d]: matches nothing (set dnn, snssai or networkInstance)", i)
		}
		if r.SNSSAI != "" {
			m := snssaiRE.FindStringSubmatch(r.SNSSAI)
			var sst int
			if m != nil {
				fmt.Sscan(m[1], &sst)
			}
			if m == nil || sst > 255 {
				return nil, fmt.Errorf("n4: steering[%d].snssai %q: want SST (0-255) or SST-SD with SD in 6 hex digits, e.g. 1-010203", i, r.SNSSAI)
			}
		}
		if len(r.UPFs) == 0 {
			return nil, fmt.Errorf("n4: steering[%d]: no UPF listed", i)
		}
		mask := make([]bool, len(byName))
		for _, n := range r.UPFs {
			j, ok := byName[n]
			if !ok {
				return nil, fmt.Errorf("n4: steering[%d]: UPF %q is not one of the proxy's", i, n)
			}
			mask[j] = true
		}
		out = append(out, rule{SteeringRule: r, mask: mask})
	}
	return out, nil
}

func (r *rule) matches(k pfcp.SteeringKeys) bool {
	if r.DNN != "" && k.DNN != r.DNN && !strings.HasPrefix(k.DNN, r.DNN+".") {
		return false
	}
	if r.SNSSAI != "" && k.SNSSAI != r.SNSSAI && !strings.HasPrefix(k.SNSSAI, r.SNSSAI+"-") {
		return false
	}
	if r.NetworkInstance != "" && !slices.Contains(k.NetworkInstances, r.NetworkInstance) {
		return false
	}
	return true
}

// allowed returns the UPFs a session with establishment request est may
// use (nil: any), and the rule that said so (-1: none).
func (m *Machine) allowed(est []byte) ([]bool, int) {
	if len(m.rules) == 0 {
		return nil, -1
	}
	k := pfcp.SessionSteeringKeys(est)
	for i := range m.rules {
		if m.rules[i].matches(k) {
			return m.rules[i].mask, i
		}
	}
	return nil, -1
}
