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
# Diameter lab: freeDiameterd as a real peer (the extensions: dictionaries,
# acl_wl, rt_load_balance).
have freeDiameterd || need+=(freediameterd)
[ -f /usr/lib/freeDiameter/rt_load_balance.fdx ] || need+=(freediameter-extensions)
have nft        || need+=(nftables)
# HA CPU benchmark (scenarios/ha): conntrackd, the peer of the sync.
have conntrackd || need+=(conntrackd)
have iperf3     || need+=(iperf3)
have ip         || need+=(iproute2)
have ethtool    || need+=(ethtool)
have gcc        || need+=(gcc)
have curl       || need+=(curl)
[ -f /usr/include/x86_64-linux-gnu/asm/types.h ] || need+=(linux-libc-dev)
# eupf's eBPF sources (scenarios/pfcp TestN4LabWithEUPF) include glibc
# headers that want gnu/stubs-32.h on the BPF target (its Dockerfile
# installs gcc-multilib for it).
[ -f /usr/include/x86_64-linux-gnu/gnu/stubs-32.h ] || [ -f /usr/include/gnu/stubs-32.h ] || need+=(libc6-dev-i386)
# Kernel-SCTP VM lab (scenarios/vm): software-emulated qemu, a busybox
# initramfs, lksctp-tools' sctp_test/sctp_darn inside it.
have qemu-system-x86_64 || need+=(qemu-system-x86)
[ -x /bin/busybox ]     || need+=(busybox-static)
have sctp_darn          || need+=(lksctp-tools)
have xz                 || need+=(xz-utils)
have cpio               || need+=(cpio)
# Metrics lab (scenarios/metrics): a real Prometheus and promtool (check
# metrics/rules, test rules) for the dashboards and alert rules.
have prometheus || need+=(prometheus)
have promtool   || need+=(prometheus)
# BGP/BFD advertisement labs (scenarios/bgp): real routers in a namespace.
have bird               || need+=(bird2)
[ -x /usr/lib/frr/bgpd ] || need+=(frr)

# The VM lab's guest kernel: Debian's 6.1 kernel (kernel SCTP as modules, no
# tcx), fetched once with apt-get download and unpacked under .cache/vm, so
# repeated runs do not refetch. The kernel is a file for qemu, not installed.
vmdir="$(cd "$(dirname "$0")/.." && pwd)/.cache/vm"
need_kernel=
ls "$vmdir"/linux/boot/vmlinuz-* >/dev/null 2>&1 || need_kernel=1

if [ ${#need[@]} -eq 0 ] && [ -z "$need_kernel" ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages (${need[*]}${need_kernel:+ guest kernel}) and not root; install them with apt-get" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
updated=
if [ ${#need[@]} -gt 0 ]; then
  # tshark asks whether non-root users may capture; we capture as root, so no.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  updated=1
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  echo "install-deps: installed ${need[*]}"
fi
if [ -n "$need_kernel" ]; then
  [ -n "$updated" ] || apt-get update -qq
  # linux-image-amd64 names the current 6.1 ABI (linux-image-6.1.0-N-amd64).
  pkg=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-6\.1\.0-[0-9]*-amd64\)$/\1/p' | head -1)
  if [ -z "$pkg" ]; then
    echo "install-deps: no linux-image-6.1.0-*-amd64 package known to apt (Debian 12 sources needed)" >&2
    exit 1
  fi
  tmp=$(mktemp -d)
  chmod 755 "$tmp" # apt-get download runs as _apt
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && apt-get download -qq "$pkg" >/dev/null)
  rm -rf "$vmdir/linux.new"
  mkdir -p "$vmdir/linux.new"
  dpkg-deb -x "$tmp"/"$pkg"_*.deb "$vmdir/linux.new"
  rm -rf "$vmdir/linux"
  mv "$vmdir/linux.new" "$vmdir/linux"
  echo "install-deps: guest kernel $pkg unpacked into $vmdir/linux"
fi
