#!/usr/bin/env bash
# Installs the Debian packages raftblock builds with and its tests drive (run as root).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
  build-essential python3 liburing-dev \
  fio libnbd-bin nbdfuse python3-libnbd nbdkit qemu-utils qemu-system-x86 \
  nbd-client busybox-static e2fsprogs cpio fuse3 kmod iproute2 util-linux procps openssl
