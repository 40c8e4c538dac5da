#!/usr/bin/env bash
# What the containerd node and `make images` need from the OS: Debian/Ubuntu packages, installed
# once per machine (root or passwordless sudo). Elsewhere it says what is missing and exits 0:
# the container suite then skips with that reason, and every other suite runs as before.
set -euo pipefail
need=(podman:podman buildah:buildah mmdebstrap:mmdebstrap containerd:containerd runc:runc ctr:containerd
      ip:iproute2 nsenter:util-linux iptables:iptables)
missing=()
for pair in "${need[@]}"; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
[ ${#missing[@]} -eq 0 ] && exit 0
missing=($(printf '%s\n' "${missing[@]}" | sort -u))
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo -n"
if ! command -v apt-get >/dev/null || { [ -n "$sudo" ] && ! sudo -n true 2>/dev/null; }; then
  echo "install-node-deps: cannot install ${missing[*]} here (needs apt-get as root); the container suite will skip" >&2
  exit 0
fi
echo "install-node-deps: installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
