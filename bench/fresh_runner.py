"""Workload h: a fresh CI runner (no local images, an empty BuildKit cache) releasing a chain of
three images whose RUN steps cost CPU, with and without the registry cache, against the docker CLI
doing what a job without BuildKit does (`docker pull` then `docker build --cache-from`).

    python bench/fresh_runner.py [--runs N] [--loops N]

Prints seconds per round and their medians. Needs the engine and docker-registry (scripts/setup.sh).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.registry import RegistryServer  # noqa: E402

NAMES = ("base", "mid", "app")


def write(folder: Path, host: str, ns: str, loops: int) -> Path:
    (folder / "base").mkdir(parents=True)
    shutil.copy("/bin/busybox", folder / "base" / "busybox")
    (folder / "base" / "Dockerfile").write_text('FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n')
    for name, parent in (("mid", "base"), ("app", "mid")):
        (folder / name).mkdir()
        (folder / name / "Dockerfile").write_text(
            f"ARG B\nFROM ${{B}}\nRUN i=0; while [ $i -lt {loops} ]; do i=$((i+1)); done; echo {name} > /{name}\n"
        )
    entries = []
    for name, parent in (("base", None), ("mid", "base"), ("app", "mid")):
        entry = f"  - name: {name}\n    context: {name}\n    tags: ['{{version}}', latest]\n    inline_cache: true\n" \
                f"    cache_from: ['{{registry}}/{{namespace}}/{{name}}:latest']\n"
        if parent:
            entry += f"    build_args: {{B: '{{registry}}/{{namespace}}/{parent}:{{version}}'}}\n"
        entries.append(entry)
    config = folder / "imgctl.yaml"
    config.write_text(f"registry: {host}\nnamespace: {ns}\nbuilder: buildkit\nimages:\n" + "".join(entries))
    return config


def fresh(host: str, ns: str) -> None:
    """What a new runner has: no image of ours, nothing in BuildKit's cache."""
    subprocess.run(["docker", "builder", "prune", "-af"], capture_output=True, check=True)
    listed = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True).stdout
    mine = [ref for ref in listed.split() if ref.startswith(f"{host}/{ns}/")]
    if mine:
        subprocess.run(["docker", "rmi", "-f", *mine], capture_output=True)
    subprocess.run(["sync"])


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return time.monotonic() - started


def docker_cli(folder: Path, host: str, ns: str, version: str, env: dict[str, str]) -> float:
    """The same release by hand, as a job without BuildKit does it: pull, build --cache-from, push."""
    started = time.monotonic()
    cli = {**env, "DOCKER_BUILDKIT": "0"}
    for name, parent in (("base", None), ("mid", "base"), ("app", "mid")):
        ref = f"{host}/{ns}/{name}"
        subprocess.run(["docker", "pull", "-q", f"{ref}:latest"], capture_output=True, env=cli)
        args = ["docker", "build", "-q", "--cache-from", f"{ref}:latest", "-t", f"{ref}:{version}", "-t", f"{ref}:latest"]
        if parent:
            args += ["--build-arg", f"B={host}/{ns}/{parent}:{version}"]
        subprocess.run([*args, str(folder / name)], check=True, capture_output=True, env=cli)
        for tag in (version, "latest"):
            subprocess.run(["docker", "push", "-q", f"{ref}:{tag}"], check=True, capture_output=True, env=cli)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--loops", type=int, default=400_000, help="busybox shell loop turns per RUN (about 1 s each here)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="imgctl-bench-h-"))
    env = {**os.environ, "DOCKER_CONFIG": str(work / "docker-config")}
    (work / "docker-config").mkdir()
    (work / "docker-config" / "config.json").write_text("{}")
    imgctl = [str(Path(sys.executable).with_name("imgctl"))]
    figures: dict[str, list[float]] = {"imgctl, cache_from": [], "imgctl, no cache": [], "docker CLI, --cache-from": []}
    with RegistryServer(work / "registry") as registry:
        ns = "bench-h"
        config = write(work / "ctx", registry.host, ns, args.loops)
        seed = timed([*imgctl, "release", "-c", str(config), "--version", "1.0.0", "-q"], env)
        print(f"seed release (cold, pushes the inline cache): {seed:.2f} s", flush=True)
        cli_ns = "bench-h-cli"  # the docker CLI's own repositories: its pushes carry no BuildKit cache
        print(f"seed for the docker CLI: {docker_cli(work / 'ctx', registry.host, cli_ns, '1.0.0', env):.2f} s", flush=True)
        for round_ in range(1, args.runs + 1):
            version = f"1.0.{round_}"
            fresh(registry.host, ns)
            figures["imgctl, cache_from"].append(timed([*imgctl, "release", "-c", str(config), "--version", version, "-q"], env))
            fresh(registry.host, ns)
            figures["imgctl, no cache"].append(
                timed([*imgctl, "release", "-c", str(config), "--version", version, "-q", "--no-cache"], env))
            fresh(registry.host, cli_ns)
            figures["docker CLI, --cache-from"].append(docker_cli(work / "ctx", registry.host, cli_ns, version, env))
            print(f"round {round_}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in figures.items()), flush=True)
        fresh(registry.host, ns)
        fresh(registry.host, cli_ns)
    print("medians:")
    for key, values in figures.items():
        print(f"  {key:28} {statistics.median(values):6.2f} s   ({', '.join(f'{v:.2f}' for v in values)})")
    cold = statistics.median(figures["imgctl, no cache"])
    print(f"  cache_from / no cache: {statistics.median(figures['imgctl, cache_from']) / cold:.2f}x;"
          f" docker CLI / imgctl no cache: {statistics.median(figures['docker CLI, --cache-from']) / cold:.2f}x")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
