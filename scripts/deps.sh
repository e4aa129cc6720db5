#!/usr/bin/env bash
# Install every Debian package keel's build, tests and demo need.
# Quiet when all are present; runs `apt-get update` first otherwise.
# Usage: scripts/deps.sh [--bench]   (--bench adds the anchors: nginx, redis, etcd, wrk, haproxy,
# nats-server with Go and NATS's Go client)
set -euo pipefail

pkgs=(
  build-essential cmake pkg-config clang libclang-rt-14-dev
  libuv1-dev libhttp-parser-dev libjansson-dev libyaml-dev libsqlite3-dev libssl-dev
  python3 python3-pytest python3-redis redis-tools curl prometheus iproute2 procps
  nftables
  redis-server # the peer: the system tests compare keel's replies with a real Redis
  chromium # headless: test_shop.py renders the shop's live page and report and screenshots them
)
if [ "${1:-}" = "--bench" ]; then
  pkgs+=(wrk nginx-light etcd-server etcd-client haproxy)
  # the streams bench's NATS JetStream anchor: the server, and Go with NATS's own client to
  # build its load generator (bench/natsbench)
  pkgs+=(nats-server golang-go golang-github-nats-io-go-nats-dev)
fi

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Tests and benchmarks start the peers themselves; never leave them running as services.
for s in nginx redis-server etcd haproxy prometheus nats-server; do
  $SUDO systemctl stop "$s" >/dev/null 2>&1 || true
  $SUDO service "$s" stop >/dev/null 2>&1 || true
done
