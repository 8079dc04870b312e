// Package eupf pins edgecomllc's eupf (an eBPF UPF in Go, a UPF-side test
// peer we did not write) in a module of its own. Its module ships neither
// its eBPF objects nor its swag API docs, so scenarios/pfcp copies the
// module's source as downloaded here (checksum in go.sum), generates both
// (bpf2go at the cilium/ebpf version eupf pins, clang; swag at the version
// eupf's Dockerfile installs) and builds it in the copy.
package eupf
