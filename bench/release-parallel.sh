#!/usr/bin/env bash
# A hand-tuned baseline: the same commands as release.sh, but the images of each dependency level
# are built and pushed at once (`&` and `wait`), level after level.
# Usage: release-parallel.sh REGISTRY/NAMESPACE VERSION FOLDER [--no-cache]
set -euo pipefail
repo=$1 version=$2 folder=$3 cache=${4:-}
minor=${version%.*}
export DOCKER_BUILDKIT=0

one() {
  local name=$1 base=$2 args=()
  if [ "$base" != "-" ]; then args+=(--build-arg "BASE=$repo/$base:$version"); fi
  docker build ${cache:+"$cache"} -t "$repo/$name:$version" "${args[@]}" "$folder/$name"
  docker tag "$repo/$name:$version" "$repo/$name:$minor"
  docker tag "$repo/$name:$version" "$repo/$name:latest"
  for tag in "$version" "$minor" latest; do
    docker push "$repo/$name:$tag"
  done
}

declare -A level
deepest=0
while read -r name base; do
  if [ "$base" = "-" ]; then level[$name]=0; else level[$name]=$(( ${level[$base]} + 1 )); fi
  if [ "${level[$name]}" -gt "$deepest" ]; then deepest=${level[$name]}; fi
done < "$folder/images.txt"

for ((l = 0; l <= deepest; l++)); do
  pids=()
  while read -r name base; do
    if [ "${level[$name]}" -eq "$l" ]; then one "$name" "$base" & pids+=($!); fi
  done < "$folder/images.txt"
  for pid in "${pids[@]}"; do wait "$pid"; done  # set -e: a failed image stops the release
done
