// Package bpf holds the TC datapath (lb.c) and its bpf2go-generated loader.
// The generated lb_bpfel.go/.o are committed so a Go build needs no clang.
package bpf

//go:generate go tool bpf2go -cc clang-14 -cflags "-O2 -g -Wall -Werror -mcpu=v3 -I/usr/include/x86_64-linux-gnu" -target bpfel -go-package bpf -type svc_key -type svc_info -type endpoint -type sel_table -type ct_key -type ct_val -type aff_key -type aff_val -type ifaddr_val -type counters -type addr16 -type svc_vips -type assoc_key -type assoc Lb lb.c -- -I.
