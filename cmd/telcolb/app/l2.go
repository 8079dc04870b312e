package app

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/ha"
	"github.com/telcolb/telcolb/ha/l2"
	"github.com/telcolb/telcolb/ha/member"
)

// L2Deps is what the daemon lends the l2 announcer.
type L2Deps struct {
	Logger *slog.Logger
	// DatapathInterfaces lists the interfaces the datapath is attached to:
	// they answer ARP / NS when neither L2Config nor the advertisement
	// names interfaces.
	DatapathInterfaces func() []string
	// Registerer, when set, receives the telcolb_l2_* metrics.
	Registerer prometheus.Registerer
}

// newL2Announcer builds the announcer of advertisements of mode l2 from the
// node's AdvertisementConfig: the member machine (heartbeats to the other
// L2 members, VIP ownership) and the ARP/NDP responder. newAnnouncers calls
// it for api.AdvertiseL2. The api package validates the configuration; the
// errors here name the field all the same, for configurations built in Go.
func newL2Announcer(cfg api.AdvertisementConfig, deps L2Deps) (ha.Announcer, error) {
	if cfg.L2 == nil {
		return nil, &api.FieldError{Field: "l2", Message: "an l2 advertisement needs the l2 section (members and heartbeats)"}
	}
	c := cfg.L2
	var peers []member.Peer
	self := false
	for i, m := range c.Members {
		ap, err := netip.ParseAddrPort(m.Address)
		if err != nil {
			return nil, &api.FieldError{Field: fmt.Sprintf("l2.members[%d].address", i), Message: fmt.Sprintf("want ip:port: %v", err)}
		}
		peers = append(peers, member.Peer{Name: m.Name, Addr: ap})
		self = self || m.Name == cfg.NodeName
	}
	if !self {
		return nil, &api.FieldError{Field: "l2.members", Message: fmt.Sprintf("this node (nodeName %q) is not among the members", cfg.NodeName)}
	}
	interval := time.Duration(c.HeartbeatIntervalMs) * time.Millisecond
	if interval == 0 {
		interval = member.DefaultInterval
	}
	logger := deps.Logger
	if logger == nil {
		logger = slog.Default()
	}
	a, err := l2.New(l2.Config{
		Node: cfg.NodeName, Members: peers, Interval: interval, DetectMultiplier: int(c.DetectMultiplier),
		Interfaces: c.Interfaces, DefaultInterfaces: deps.DatapathInterfaces,
		// Local VIPs (N2, PFCP) are addresses of every node: only the owner
		// may answer for them, so the kernel must not.
		Responder:  l2.ResponderConfig{StrictARP: true},
		Logger:     logger.With("advertise", api.AdvertiseL2),
		Registerer: deps.Registerer,
	})
	if err != nil {
		var fe *api.FieldError
		if errors.As(err, &fe) {
			return nil, err
		}
		return nil, fmt.Errorf("l2 advertisement: %w", err)
	}
	return a, nil
}
