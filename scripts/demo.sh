#!/usr/bin/env bash
# Sets everything up, releases config/demo.yaml to a local registry on 127.0.0.1:5055, and runs
# the released image. Usage: bash scripts/demo.sh [VERSION]   (default 1.0.0)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$repo/scripts/setup.sh"
version="${1:-1.0.0}"
port=5055
state="${TMPDIR:-/tmp}/imgctl-demo-registry"

if ! curl -fs "http://127.0.0.1:$port/v2/" >/dev/null 2>&1; then
  mkdir -p "$state/data"
  cat > "$state/config.yml" <<YAML
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $state/data}
  delete: {enabled: true}
http:
  addr: 127.0.0.1:$port
  secret: imgctl-demo-only
YAML
  echo "demo: starting a registry on 127.0.0.1:$port (data in $state/data)"
  setsid nohup docker-registry serve "$state/config.yml" >"$state/registry.log" 2>&1 < /dev/null &
  for _ in $(seq 30); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break; sleep 0.5; done
fi

cp /bin/busybox "$repo/config/demo/base/busybox"
imgctl release -c "$repo/config/demo.yaml" --version "$version"
echo "demo: running 127.0.0.1:$port/demo/app:$version"
docker rmi "127.0.0.1:$port/demo/app:$version" >/dev/null 2>&1 || true
docker pull -q "127.0.0.1:$port/demo/app:$version"
docker run --rm "127.0.0.1:$port/demo/app:$version"
