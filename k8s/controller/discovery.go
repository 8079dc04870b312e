package controller

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// discovery keeps the daemon list equal to the ready endpoints of the
// daemons' headless Service. It polls the informer cache (no API traffic),
// so a new or restarted daemon pod is picked up within a health interval and
// then fully synced by the Daemons loop.
type discovery struct {
	r         *Reconciler
	namespace string
	name      string
}

func (d *discovery) NeedLeaderElection() bool { return true }

func (d *discovery) Start(ctx context.Context) error {
	interval := d.r.cfg.HealthInterval
	if interval <= 0 {
		interval = 2 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var last []string
	for {
		urls, nodes, err := d.urls(ctx)
		if err != nil {
			d.r.log.Warn("daemon discovery", "error", err)
		} else if fmt.Sprint(urls) != fmt.Sprint(last) {
			if err := d.r.daemons.SetDaemons(urls); err != nil {
				d.r.log.Warn("daemon discovery", "error", err)
			}
			last = urls
		}
		if err == nil {
			d.r.daemons.SetNodes(nodes)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// urls lists the ready daemons' URLs and, from the endpoints' nodeName,
// their nodes.
func (d *discovery) urls(ctx context.Context) ([]string, map[string]string, error) {
	var list discoveryv1.EndpointSliceList
	if err := d.r.client.List(ctx, &list, client.InNamespace(d.namespace), client.MatchingLabels{discoveryv1.LabelServiceName: d.name}); err != nil {
		return nil, nil, fmt.Errorf("list EndpointSlices of %s/%s: %w", d.namespace, d.name, err)
	}
	nodes := map[string]string{}
	seen := map[string]bool{}
	var out []string
	for _, sl := range list.Items {
		for _, ep := range sl.Endpoints {
			if !endpointUsable(ep) {
				continue
			}
			for _, a := range ep.Addresses {
				u := d.r.cfg.DaemonScheme + "://" + net.JoinHostPort(a, strconv.Itoa(d.r.cfg.DaemonPort))
				if ep.NodeName != nil && *ep.NodeName != "" {
					nodes[u] = *ep.NodeName
				}
				if !seen[u] {
					seen[u] = true
					out = append(out, u)
				}
			}
		}
	}
	sort.Strings(out)
	return out, nodes, nil
}
