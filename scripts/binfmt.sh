#!/usr/bin/env bash
# Idempotent: user-mode emulation of foreign architectures for builds and containers, as
# docker/setup-qemu-action (tonistiigi/binfmt) sets it up on CI runners. Each architecture named
# (default: aarch64 for linux/arm64, arm for linux/arm/v7) is registered in binfmt_misc for Debian's
# qemu-user-static WITH the fix-binary (F) flag: the kernel opens the emulator once, at
# registration, so it also runs binaries of containers built FROM scratch, which have no
# /usr/bin/qemu-*-static of their own. Debian's or systemd's own registration may lack F: such an
# entry is removed and registered again. An entry that already has F is left alone (whoever made it).
# Prints one line per entry it (re)registers, nothing when nothing changed.
# Usage: bash scripts/binfmt.sh [ARCH...]   (needs qemu-user-static; scripts/setup.sh installs it)
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
binfmt=/proc/sys/fs/binfmt_misc

if [ ! -e "$binfmt/register" ]; then
  $SUDO mount -t binfmt_misc binfmt_misc "$binfmt"
fi
if [ "$(cat "$binfmt/status")" != "enabled" ]; then
  echo 1 | $SUDO tee "$binfmt/status" >/dev/null
fi

# The value of `key` in a binfmt-support format file (/usr/share/binfmts/NAME).
field() {
  sed -n "s/^$2 //p" "$1"
}

[ $# -gt 0 ] || set -- aarch64 arm
for arch in "$@"; do
  name="qemu-$arch"
  emulator="/usr/bin/qemu-$arch-static"
  format="/usr/share/binfmts/$name"
  entry="$binfmt/$name"
  if [ ! -x "$emulator" ] || [ ! -r "$format" ]; then
    echo "binfmt: $emulator or $format is missing: install qemu-user-static" >&2
    exit 1
  fi
  if [ -e "$entry" ] && grep -qx enabled "$entry" && grep -q '^flags: .*F' "$entry"; then
    continue
  fi
  if [ -e "$entry" ]; then
    echo -1 | $SUDO tee "$entry" >/dev/null
  fi
  # M: match magic bytes at offset; F: open the emulator now; P: keep argv[0]; C: setuid binaries' credentials
  printf ':%s:M:%s:%s:%s:%s:FPC\n' "$name" "$(field "$format" offset)" "$(field "$format" magic)" \
    "$(field "$format" mask)" "$emulator" | $SUDO tee "$binfmt/register" >/dev/null
  echo "binfmt: registered $name ($emulator, flags F P C)"
done
