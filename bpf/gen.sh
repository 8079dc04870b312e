#!/bin/sh
# Compiles lb.c into lb_bpfel.o and its Go loader lb_bpfel.go (sock.c into
# sock_bpfel.o / sock_bpfel.go, clock.c into clock_bpfel.o / clock_bpfel.go),
# and writes the
# enums of include/lb_types.h as Go constants (lb_enums.go); run by
# `go generate`, see gen.go. The compiler is the distribution's default
# clang, the one hack/install-deps.sh installs (override with BPF2GO_CC).
# Debian keeps asm/ under the multiarch include directory, which clang does
# not search when targeting BPF: ask the compiler where it is.
# With an argument, writes the files into that directory instead (the check
# `make check-generate` compares them with the committed ones).
set -eu
out=${1:-.}
cc=${BPF2GO_CC:-clang}
arch=$("$cc" -print-multiarch 2>/dev/null || true)
[ -n "$arch" ] || arch=$(gcc -print-multiarch)
go tool bpf2go -cc "$cc" -cflags "-O2 -g -Wall -Werror -mcpu=v3 -I/usr/include/$arch" \
	-target bpfel -go-package bpf -output-dir "$out" \
	-type svc_key -type svc_info -type endpoint -type sel_table -type ct_key -type ct_key4 -type ct_val \
	-type aff_key -type aff_val -type ifaddr_val -type counters -type xdp_iface -type addr16 -type svc_vips \
	-type assoc_key -type assoc -type filter_bits -type maglev_table -type ct_event -type ct_entry_event \
	Lb lb.c -- -I.
# Socket-level load balancing (sock.c): its own object, loaded with the
# datapath's maps in place of its own (dataplane/socklb.go).
go tool bpf2go -cc "$cc" -cflags "-O2 -g -Wall -Werror -mcpu=v3 -I/usr/include/$arch" \
	-target bpfel -go-package bpf -output-dir "$out" \
	-type sock_rev_key -type sock_rev_val -type sock_flow_key -type sock_flow_val \
	Sock sock.c -- -I.
go run ./internal/enumgen include/lb_types.h "$out/lb_enums.go"
# The clock probe (clock.c): lb_now()'s calibration at load (dataplane/clock.go).
go tool bpf2go -cc "$cc" -cflags "-O2 -g -Wall -Werror -mcpu=v3 -I/usr/include/$arch" \
	-target bpfel -go-package bpf -output-dir "$out" \
	-type clock_params Clock clock.c -- -I.
