// Package bpf holds the TC datapath (lb.c and its stages in lib/) and its
// bpf2go-generated loader. The generated lb_bpfel.go/.o are committed so a
// Go build needs no clang; `make test` checks they match the sources.
package bpf

//go:generate sh gen.sh
