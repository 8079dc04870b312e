// Package bpf holds the TC datapath (lb.c and its stages in lib/), the
// socket-level load balancing (sock.c, lib/sock_lb.h), their
// bpf2go-generated loaders and the enums of include/lb_types.h as Go
// constants (lb_enums.go). Generated files are committed so a Go build needs
// no clang; `make test` checks they match the sources (check-generate).
package bpf

//go:generate sh gen.sh
