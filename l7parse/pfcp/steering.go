package pfcp

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// IE types read for steering a new session (TS 29.244 §8.1.2).
const (
	IECreatePDR         uint16 = 1
	IEPDI               uint16 = 2
	IECreateFAR         uint16 = 3
	IEForwardingParams  uint16 = 4
	IENetworkInstance   uint16 = 22
	IEAPNDNN            uint16 = 159
	IESNSSAI            uint16 = 257
	maxSteeringIEDepth         = 3
	steeringValueMaxLen        = 255
	enterpriseIEFlag    uint16 = 0x8000
)

// SteeringKeys are what of a Session Establishment Request an operator
// may map to a set of UPFs. Empty means absent.
type SteeringKeys struct {
	// DNN is the APN/DNN IE (§8.2.103), its labels joined by dots.
	DNN string
	// SNSSAI is the S-NSSAI IE (§8.2.156): the SST in decimal, then "-"
	// and the SD in six hex digits when the SD is present ("1",
	// "1-010203").
	SNSSAI string
	// NetworkInstances are the Network Instance IEs (§8.2.4) of the Create
	// PDRs' PDIs and of the Create FARs' Forwarding Parameters, in order,
	// each once.
	NetworkInstances []string
}

// SessionSteeringKeys reads the steering keys of a Session Establishment
// Request b (which passed Parse). Malformed grouped IEs are skipped: what
// cannot be read does not match, it never fails the request (the UPF
// judges the content).
func SessionSteeringKeys(b []byte) SteeringKeys {
	var k SteeringKeys
	if len(b) < 8 {
		return k
	}
	seen := map[string]bool{}
	walkIEs(b[HeaderLen(b[0]&1 != 0):], 0, func(path [maxSteeringIEDepth]uint16, depth int, t uint16, v []byte) {
		switch {
		case depth == 0 && t == IEAPNDNN && k.DNN == "":
			k.DNN = dnnString(v)
		case depth == 0 && t == IESNSSAI && k.SNSSAI == "" && len(v) >= 1:
			k.SNSSAI = fmt.Sprint(v[0])
			if len(v) >= 4 {
				k.SNSSAI += fmt.Sprintf("-%02x%02x%02x", v[1], v[2], v[3])
			}
		case t == IENetworkInstance && depth == 2 &&
			((path[0] == IECreatePDR && path[1] == IEPDI) || (path[0] == IECreateFAR && path[1] == IEForwardingParams)):
			ni := dnnString(v)
			if ni != "" && !seen[ni] {
				seen[ni] = true
				k.NetworkInstances = append(k.NetworkInstances, ni)
			}
		}
	})
	return k
}

// walkIEs calls fn for every IE of b, descending into the grouped IEs that
// can hold steering keys. It stops at the first IE that overruns b.
func walkIEs(b []byte, depth int, fn func(path [maxSteeringIEDepth]uint16, depth int, t uint16, v []byte)) {
	var path [maxSteeringIEDepth]uint16
	walk(b, depth, path, fn)
}

func walk(b []byte, depth int, path [maxSteeringIEDepth]uint16, fn func([maxSteeringIEDepth]uint16, int, uint16, []byte)) {
	for off := 0; off+4 <= len(b); {
		t := binary.BigEndian.Uint16(b[off:])
		end := off + 4 + int(binary.BigEndian.Uint16(b[off+2:]))
		if end > len(b) {
			return
		}
		v := b[off+4 : end]
		if t&enterpriseIEFlag != 0 {
			off = end // vendor IE: not ours to read
			continue
		}
		fn(path, depth, t, v)
		if depth+1 < maxSteeringIEDepth && (t == IECreatePDR || t == IEPDI || t == IECreateFAR || t == IEForwardingParams) {
			path[depth] = t
			walk(v, depth+1, path, fn)
			path[depth] = 0
		}
		off = end
	}
}

// dnnString decodes a DNN or Network Instance: DNS labels (length-prefixed,
// as TS 23.003 encodes an APN) when the bytes parse as such, else the bytes
// as text (several SMFs send plain text). Bytes that are not printable
// make it empty.
func dnnString(v []byte) string {
	if len(v) == 0 || len(v) > steeringValueMaxLen {
		return ""
	}
	if labels, ok := dnsLabels(v); ok {
		return labels
	}
	for _, c := range v {
		if c < 0x21 || c > 0x7e {
			return ""
		}
	}
	return strings.ToLower(string(v))
}

func dnsLabels(v []byte) (string, bool) {
	var parts []string
	for len(v) > 0 {
		l := int(v[0])
		if l == 0 || l+1 > len(v) {
			return "", false
		}
		for _, c := range v[1 : 1+l] {
			if c < 0x21 || c > 0x7e || c == '.' {
				return "", false
			}
		}
		parts = append(parts, strings.ToLower(string(v[1:1+l])))
		v = v[1+l:]
	}
	return strings.Join(parts, "."), true
}
