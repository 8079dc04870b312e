#!/usr/bin/env bash
# Installs the system packages telcolb's build, tests, demo and benchmarks use.
# Idempotent: does nothing when every command is already there.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have clang      || need+=(clang)
have llvm-strip || need+=(llvm)
have bpftool    || need+=(bpftool)
[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
[ -f /usr/include/usrsctp.h ]         || need+=(libusrsctp-dev)
have tshark     || need+=(tshark)
have dumpcap    || need+=(tshark)
have text2pcap  || need+=(tshark)
have nft        || need+=(nftables)
have iperf3     || need+=(iperf3)
have ip         || need+=(iproute2)
have ethtool    || need+=(ethtool)
have gcc        || need+=(gcc)
have curl       || need+=(curl)
[ -f /usr/include/x86_64-linux-gnu/asm/types.h ] || need+=(linux-libc-dev)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages (${need[*]}) and not root; install them with apt-get" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# tshark asks whether non-root users may capture; we capture as root, so no.
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "install-deps: installed ${need[*]}"
