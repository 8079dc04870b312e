package l4

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	"github.com/telcolb/telcolb/scenarios/capture"
)

// InitAddresses returns, per captured INIT or INIT-ACK (chunk "INIT" or
// "INIT_ACK"), the addresses its IPv4/IPv6 address parameters list, as
// tshark decodes them.
func InitAddresses(ctx context.Context, file, chunk string) ([][]netip.Addr, error) {
	typ := map[string]int{"INIT": 1, "INIT_ACK": 2}[chunk]
	if typ == 0 {
		return nil, fmt.Errorf("init addresses: chunk %q is not INIT or INIT_ACK", chunk)
	}
	rows, err := capture.Fields(ctx, file, fmt.Sprintf("sctp.chunk_type == %d", typ),
		"sctp.parameter_ipv4_address", "sctp.parameter_ipv6_address")
	if err != nil {
		return nil, fmt.Errorf("init addresses: %w", err)
	}
	return parseInitAddressRows(rows)
}

// InitParameters is what one captured INIT or INIT-ACK says besides its
// addresses: the type of every parameter, in order, and the entries of its
// Supported Address Types parameter.
type InitParameters struct {
	Types     []uint16
	AddrTypes []uint16
}

// SkipParam is the unassigned, skip-silently parameter type the LB gives
// what it cannot carry when it cannot remove it (lb.c, SCTP multi-homing).
const SkipParam = 0xbffe

// HasSkipped reports whether the chunk carries a parameter the LB skipped
// instead of removing.
func (p InitParameters) HasSkipped() bool { return slices.Contains(p.Types, SkipParam) }

// InitParams returns the parameters of every captured INIT or INIT-ACK
// (chunk "INIT" or "INIT_ACK"), as tshark decodes them.
func InitParams(ctx context.Context, file, chunk string) ([]InitParameters, error) {
	typ := map[string]int{"INIT": 1, "INIT_ACK": 2}[chunk]
	if typ == 0 {
		return nil, fmt.Errorf("init parameters: chunk %q is not INIT or INIT_ACK", chunk)
	}
	rows, err := capture.Fields(ctx, file, fmt.Sprintf("sctp.chunk_type == %d", typ),
		"sctp.parameter_type", "sctp.parameter_supported_address_type")
	if err != nil {
		return nil, fmt.Errorf("init parameters: %w", err)
	}
	return parseInitParamRows(rows)
}

// parseInitParamRows turns tshark rows (parameter types, address types;
// comma-joined, decimal or hex) into InitParameters.
func parseInitParamRows(rows [][]string) ([]InitParameters, error) {
	var out []InitParameters
	for _, r := range rows {
		if len(r) != 2 {
			return nil, fmt.Errorf("init parameters: %d columns, want 2", len(r))
		}
		var p InitParameters
		for i, dst := range []*[]uint16{&p.Types, &p.AddrTypes} {
			for _, s := range splitComma(r[i]) {
				v, err := strconv.ParseUint(s, 0, 16)
				if err != nil {
					return nil, fmt.Errorf("init parameters: tshark field %q: %w", s, err)
				}
				*dst = append(*dst, uint16(v))
			}
		}
		out = append(out, p)
	}
	return out, nil
}

// parseInitAddressRows turns tshark rows (columns of comma-joined
// addresses) into address lists.
func parseInitAddressRows(rows [][]string) ([][]netip.Addr, error) {
	var out [][]netip.Addr
	for _, r := range rows {
		var addrs []netip.Addr
		for _, col := range r {
			for _, s := range splitComma(col) {
				a, err := netip.ParseAddr(s)
				if err != nil {
					return nil, fmt.Errorf("init addresses: tshark field %q: %w", s, err)
				}
				addrs = append(addrs, a)
			}
		}
		out = append(out, addrs)
	}
	return out, nil
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			if i > start {
				out = append(out, s[start:i])
			}
			start = i + 1
		}
	}
	return out
}
