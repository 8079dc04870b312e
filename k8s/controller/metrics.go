package controller

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telcolb/telcolb/k8s/ipam"
)

// Metrics are the controller's Prometheus series.
type Metrics struct {
	poolSize           *prometheus.GaugeVec
	poolInUse          *prometheus.GaugeVec
	reconcileErrors    *prometheus.CounterVec
	allocationFailures *prometheus.CounterVec
	daemonUp           *prometheus.GaugeVec
	advertisementPuts  *prometheus.CounterVec
}

// NewMetrics registers the controller's series on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		poolSize: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "telcolb_controller_pool_size", Help: "Addresses in the pool (saturates at 2^64-1).",
		}, []string{"pool", "family"}),
		poolInUse: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "telcolb_controller_pool_in_use", Help: "Addresses of the pool held by at least one Service.",
		}, []string{"pool", "family"}),
		reconcileErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "telcolb_controller_reconcile_errors_total", Help: "Service reconciles that ended in an error, by cause.",
		}, []string{"reason"}),
		allocationFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "telcolb_controller_allocation_failures_total", Help: "VIP allocations that failed, by pool and cause.",
		}, []string{"pool", "reason"}),
		daemonUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "telcolb_controller_daemon_up", Help: "1 when the daemon answered its last health check.",
		}, []string{"daemon"}),
		advertisementPuts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "telcolb_controller_advertisement_puts_total", Help: "Advertisement configurations sent to daemons, by result (ok, error).",
		}, []string{"result"}),
	}
	for _, c := range m.collectors() {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("metrics: %w (one controller per registry)", err)
			}
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	return m, nil
}

// collectors are every series family of the controller (docs/metrics.md lists them).
func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.poolSize, m.poolInUse, m.reconcileErrors, m.allocationFailures, m.daemonUp, m.advertisementPuts}
}

func (m *Metrics) observePools(a *ipam.Allocator) {
	// Pools come and go with IPPool objects: drop the series of removed ones.
	m.poolSize.Reset()
	m.poolInUse.Reset()
	for _, s := range a.Stats() {
		fam := s.Family.String()
		m.poolSize.WithLabelValues(s.Pool, fam).Set(float64(s.Size))
		m.poolInUse.WithLabelValues(s.Pool, fam).Set(float64(s.InUse))
	}
}
