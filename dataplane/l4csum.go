package dataplane

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/telcolb/telcolb/bpf"
)

// castKfunc is the kfunc that lets the established fast path read
// skb->ip_summed and write TCP/UDP checksums itself instead of through two
// bpf_l4_csum_replace calls (bpf/lib/fastpath.h, l4_csum_direct). Linux 6.2
// has it; 5.15 and 6.1 do not, and keep the helpers.
const castKfunc = "bpf_cast_to_kern_ctx"

// kernelHasKfunc says whether the running kernel's BTF declares the
// function name: the test the object's loader applies to a weak kfunc, so
// the datapath's flag and the loader's resolution agree.
func kernelHasKfunc(name string) (bool, error) {
	spec, err := btf.LoadKernelSpec()
	if errors.Is(err, ebpf.ErrNotSupported) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("load kernel BTF: %w", err)
	}
	var fn *btf.Func
	err = spec.TypeByName(name, &fn)
	if errors.Is(err, btf.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up %s in kernel BTF: %w", name, err)
	}
	return true, nil
}

// setDirectL4Csum turns the direct checksum writes on in spec when the
// kernel allows them and cfg does not ask for the helpers, and says which
// it chose. A failed probe is no error: the helpers are right everywhere.
func setDirectL4Csum(spec *ebpf.CollectionSpec, cfg Config, log *slog.Logger) (bool, error) {
	if cfg.HelperL4Csum {
		return false, nil
	}
	ok, err := kernelHasKfunc(castKfunc)
	if err != nil {
		log.Warn("probe for direct checksum writes; using the checksum helpers", "kfunc", castKfunc, "err", err)
		return false, nil
	}
	if !ok {
		return false, nil
	}
	v, found := spec.Variables[bpf.LbVarDirectL4Csum]
	if !found {
		return false, errors.New("datapath object has no direct_l4_csum")
	}
	if err := v.Set(uint32(1)); err != nil {
		return false, fmt.Errorf("enable direct checksum writes: %w", err)
	}
	return true, nil
}

// DirectL4Csum says whether the loaded fast path writes TCP/UDP checksums
// itself (kernel 6.2+) rather than through bpf_l4_csum_replace.
func (d *Datapath) DirectL4Csum() bool { return d.directL4Csum }
