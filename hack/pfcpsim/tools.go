//go:build tools

// Package pfcpsim pins OMEC's PFCP simulator (an SMF-side test peer we did
// not write) in a module of its own, so its gRPC dependencies stay out of
// telcolb's go.mod. scenarios/pfcp builds pfcpsim and pfcpctl from here.
package pfcpsim

import (
	_ "github.com/omec-project/pfcpsim/cmd/pfcpctl"
	_ "github.com/omec-project/pfcpsim/cmd/pfcpsim"
)
