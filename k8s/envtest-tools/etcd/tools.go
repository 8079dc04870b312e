//go:build tools

// Package tools pins etcd in its own module: k8s.io/kubernetes v1.37 requires
// etcd v3.7 libraries, and minimal version selection would silently upgrade
// a v3.6.5 server sharing a module with it.
package tools

import _ "go.etcd.io/etcd/server/v3"
