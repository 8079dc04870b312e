#!/usr/bin/env bash
# Builds the envtest control plane (kube-apiserver v1.37.2, etcd v3.6.5) from
# their Go modules into the directory given as $1 (e.g. .cache/envtest/bin),
# which is what KUBEBUILDER_ASSETS then points at. Pinned by go.sum in this
# directory, so no unverified tarball is ever downloaded. Skips the build when
# the binaries exist and were built from the current go.sum files.
set -euo pipefail

if [[ $# -ne 1 ]]; then
	echo "usage: $0 <output-dir>" >&2
	exit 2
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$1"
out="$(cd "$1" && pwd)"
GO="${GO:-go}"

k8s_version=v1.37.2
stamp="$out/.telcolb-envtest-stamp"
want="$(cat "$here/go.mod" "$here/go.sum" "$here/etcd/go.mod" "$here/etcd/go.sum" "$here/build.sh" | sha256sum | cut -d' ' -f1)"
if [[ -x "$out/kube-apiserver" && -x "$out/etcd" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
	echo "envtest binaries up to date in $out"
	exit 0
fi

start=$(date +%s)
# Static binaries: the API server and etcd need no cgo, and -s -w cuts link
# time, which dominates on small CI machines.
export CGO_ENABLED=0
ver=k8s.io/component-base/version
ldflags="-s -w -X $ver.gitVersion=$k8s_version -X $ver.gitMajor=1 -X $ver.gitMinor=37 -X $ver.gitTreeState=clean"

echo "building kube-apiserver $k8s_version into $out"
(cd "$here" && "$GO" build -mod=readonly -trimpath -ldflags "$ldflags" -o "$out/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
mv "$out/kube-apiserver.tmp" "$out/kube-apiserver"

echo "building etcd into $out"
(cd "$here/etcd" && "$GO" build -mod=readonly -trimpath -ldflags "-s -w" -o "$out/etcd.tmp" go.etcd.io/etcd/server/v3)
mv "$out/etcd.tmp" "$out/etcd"

echo "$want" >"$stamp"
echo "envtest binaries built in $(( $(date +%s) - start ))s"
