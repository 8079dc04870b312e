// Package metrics is the metrics lab: a real Prometheus (Debian's 2.42)
// scrapes the telcolb daemon while L4 traffic, the N2 scenario and PFCP
// sessions run through it, and every panel query of the generated
// dashboards and every alert expression (monitoring/) is evaluated through
// Prometheus's HTTP API. The test is metrics_lab_test.go.
package metrics
