// Package app is the telcolb daemon without its process shell: the REST
// server, the persisted rule store, endpoint probes and metrics. Tests run it
// in-process against a fake datapath; cmd/telcolb wires the eBPF one.
package app

import "github.com/telcolb/telcolb/dataplane"

// Datapath is the part of *dataplane.Datapath the daemon drives. Keeping it
// an interface lets tests run the whole server without eBPF.
type Datapath interface {
	UpsertService(dataplane.Service) error
	DeleteService(id uint32) error
	Conntrack() ([]dataplane.Conn, error)
	FlushConntrack() error
	ServiceStats(id uint32, nEndpoints int) (dataplane.ServiceStats, error)
	DropStats() (map[dataplane.DropReason]uint64, error)
	Interfaces() []string
	AttachMode() string
}
