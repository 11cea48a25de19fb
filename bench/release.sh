#!/usr/bin/env bash
# The baseline: what the Docker docs teach, image after image (docker build -t, docker tag,
# docker push). Usage: release.sh REGISTRY/NAMESPACE VERSION FOLDER [--no-cache]
# FOLDER/images.txt lists "name base" lines in dependency order ("-" for an image FROM scratch);
# FOLDER/NAME is each image's build context.
set -euo pipefail
repo=$1 version=$2 folder=$3 cache=${4:-}
minor=${version%.*}
export DOCKER_BUILDKIT=0
while read -r name base; do
  args=()
  if [ "$base" != "-" ]; then args+=(--build-arg "BASE=$repo/$base:$version"); fi
  docker build ${cache:+"$cache"} -t "$repo/$name:$version" "${args[@]}" "$folder/$name"
  docker tag "$repo/$name:$version" "$repo/$name:$minor"
  docker tag "$repo/$name:$version" "$repo/$name:latest"
  for tag in "$version" "$minor" latest; do
    docker push "$repo/$name:$tag"
  done
done < "$folder/images.txt"
