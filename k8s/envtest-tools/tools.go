//go:build tools

// Package tools pins the envtest control-plane binaries (kube-apiserver) in
// this module's go.mod so build.sh builds them from source with checked sums
// instead of downloading opaque release tarballs.
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
