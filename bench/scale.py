"""Workload f (issue 15): 100 images in 3 levels, imgctl against the docker CLI script, on the real engine.

    python bench/scale.py [--runs N] [--script-runs N] [--only cold,cached,noop,subtree,promote,copy]
                          [--src DIR] [--builder classic|buildkit] [--timeout SECONDS]
                          [--events DIR] [--py-spy DIR]

1 base FROM scratch (busybox copied in), 10 mid images FROM it, 89 leaves FROM the mids (leaf K
FROM mid K % 10); each FROM its base through `ARG BASE` / `FROM ${BASE}` (build arg
`{registry}/{namespace}/<base>:{version}`) and `depends_on`, each with a small file of its own
context copied in and a `RUN echo NAME > /name`; 3 tags each ({version}, {major}.{minor}, latest).

Each round, in turn (the order rotates every round), a fresh docker-registry on 127.0.0.1 for:

- imgctl: cold `release --no-cache` (1.4.2), the same again with the cache (`cached`),
  `--skip-unchanged` with a new version and nothing changed (`noop`, 1.4.3), `--skip-unchanged`
  with a new version and one file of mid3's context changed (`subtree`, 1.4.4: mid3 and its 9
  leaves should build), then, after an untimed `release --version 2.0.0-rc.1` (every image
  rebuilt from the cache with its new version label, only its rc tag pushed), `promote --from
  2.0.0-rc.1 --version 2.0.0` within the registry (`promote`: 100 images x 3 tags);
- bench/release.sh (build, tag, push, image after image, DOCKER_BUILDKIT=0): cold with
  --no-cache, then its cached re-run. `--script-runs` rounds only (default: all).

`copy`: one image with a 100 MB random layer in a source registry, promoted with `imgctl promote
--from-registry` to a fresh second registry as 3 tags, against `skopeo copy` of the same image
to each of those 3 tags of another fresh registry (the same end state); and with 1 tag, against
one `skopeo copy`; and an image of the same 100 MB in 8 layers, 1 tag each way; in turn each round.

Every imgctl run is `-o json`: builds (`build_done`) and pushes (`push_started`) are counted from
its events. Requests are counted from the registry's access log (docker-registry logs every
request with its method, URI and User-Agent): imgctl's own (User-Agent `imgctl/...`) apart from
the engine's (its pushes, and its pulls of reused bases), by kind, per image. Figures are
printed, never asserted. Everything lives in one temp folder, removed at the end, images included.
Run it with the venv's python; the engine must be running (`bash scripts/setup.sh` starts it).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import IMGCTL, REPO, SCRIPT, image_entry, machine, remove_images, write_config  # noqa: E402

from tests.support.registry import RegistryServer  # noqa: E402

BUSYBOX = Path("/bin/busybox")
VERSION, NOOP, SUBTREE, RC, FINAL = "1.4.2", "1.4.3", "1.4.4", "2.0.0-rc.1", "2.0.0"
MIDS, LEAVES = 10, 89
CHANGED = "mid3"
BIG_RC, BIG_FINAL, BIG_BYTES = "1.0.0-rc.1", "1.0.0", 100_000_000

# name, base: 1 image FROM scratch, 10 FROM it, 89 FROM those
IMAGES = ([("base", None)] + [(f"mid{m}", "base") for m in range(MIDS)]
          + [(f"leaf{k:02d}", f"mid{k % MIDS}") for k in range(LEAVES)])
COUNT = len(IMAGES)
SUBTREE_EXPECTED = {CHANGED} | {name for name, base in IMAGES if base == CHANGED}

KINDS = ["ping", "manifest HEAD", "manifest GET", "manifest PUT", "blob HEAD", "blob GET", "blob upload",
         "blob mount", "tags list", "token", "other"]

samples: dict[str, list[float]] = defaultdict(list)
requests_seen: dict[str, list[Counter[tuple[str, str]]]] = defaultdict(list)  # run -> per round (agent, kind)
events_seen: dict[str, list[Counter[str]]] = defaultdict(list)  # run -> per round, event types
notes: dict[str, list[str]] = defaultdict(list)
profile_dir: Path | None = None
py_spy: str | None = None
timeout = 900.0
builder: list[str] = []  # --builder for imgctl's releases, if given
imgctl_tmp: str | None = None  # TMPDIR for imgctl: `promote` has no --log-dir and makes a log folder there
events_dir: Path | None = None


# -- the workload ------------------------------------------------------------------------------

def write_contexts(folder: Path) -> None:
    for name, base in IMAGES:
        context = folder / name
        context.mkdir(parents=True)
        (context / "own.txt").write_text(f"{name} {uuid.uuid4().hex}\n")
        if base is None:
            shutil.copy(BUSYBOX, context / "busybox")
            text = 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        else:
            text = "ARG BASE\nFROM ${BASE}\n"
        (context / "Dockerfile").write_text(text + f"COPY own.txt /own/{name}.txt\nRUN echo {name} > /name\n")
    (folder / "images.txt").write_text("".join(f"{name} {base or '-'}\n" for name, base in IMAGES))


def release_config(folder: Path, host: str, namespace: str) -> Path:
    images = "".join(image_entry(name, name, base) for name, base in IMAGES)
    return write_config(folder / f"{namespace}.yaml", host, namespace, images)


# -- running and counting -----------------------------------------------------------------------

class Slice:
    """The access-log lines a registry wrote between start() and stop()."""

    def __init__(self, registry: RegistryServer) -> None:
        self.registry = registry
        self.offset = 0

    def start(self) -> Slice:
        self.offset = self.registry.log_path.stat().st_size if self.registry.log_path.exists() else 0
        return self

    def lines(self) -> list[str]:
        time.sleep(0.2)  # the registry logs a request just after answering it
        with open(self.registry.log_path, "rb") as log:
            log.seek(self.offset)
            return log.read().decode(errors="replace").splitlines()


ACCESS = re.compile(r'^\S+ \S+ \S+ \[[^\]]+\] "(\S+) (\S+) [^"]*" (\d{3}) \S+ "[^"]*" "([^"]*)"')


def agent_of(user_agent: str) -> str:
    if user_agent.startswith("imgctl"):
        return "imgctl"
    if user_agent.startswith(("docker/", "containerd", "buildkit", "moby")):
        return "engine"
    return user_agent.split(" ")[0].split("/")[0] or "-"


def kind_of(method: str, uri: str) -> str:
    path, _, query = uri.partition("?")
    if path in ("/v2/", "/v2"):
        return "ping"
    if "/manifests/" in path:
        return f"manifest {method}" if method in ("HEAD", "GET", "PUT") else "other"
    if "/blobs/uploads" in path:
        return "blob mount" if method == "POST" and "mount=" in query else "blob upload"
    if "/blobs/" in path:
        return f"blob {method}" if method in ("HEAD", "GET") else "other"
    if path.endswith("/tags/list"):
        return "tags list"
    if "token" in path:
        return "token"
    return "other"


def count_requests(lines: list[str]) -> Counter[tuple[str, str]]:
    counted: Counter[tuple[str, str]] = Counter()
    for line in lines:
        match = ACCESS.match(line)
        if not match:
            continue
        method, uri, status, user_agent = match.groups()
        agent = agent_of(user_agent)
        if agent == "python-requests":  # the bench's own checks
            continue
        counted[agent, kind_of(method, uri)] += 1
        if status.startswith("5"):
            counted[agent, "5xx"] += 1
    return counted


def timed(command: list[str], env: dict[str, str], what: str, key: str | None = None) -> tuple[float, list[dict]]:
    """Run to completion after a sync; return wall seconds and the JSON events it printed, if any."""
    os.sync()  # the last run's writes go to disk now, not during this one
    if command[0] == IMGCTL and imgctl_tmp:
        env = {**env, "TMPDIR": imgctl_tmp}
    if profile_dir is not None and py_spy and command[0] == IMGCTL and key:
        out = profile_dir / f"{key.replace(' ', '-')}-{len(samples[key]) + 1}.txt"
        command = [py_spy, "record", "--idle", "--subprocesses", "-r", "200", "-f", "raw", "-o", str(out), "--", *command]
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        # Not subprocess.run(timeout=...): its wait polls, with sleeps growing to 50 ms, so every
        # time it measured came out up to 50 ms late, in steps. A timer kills a run that hangs;
        # the wait blocks, and ends when the child does.
        # Its own process group, so that a kill reaches `sh -c` and py-spy's children too.
        started = time.perf_counter()
        done = subprocess.Popen(command, env=env, stdout=stdout, stderr=stderr, start_new_session=True)

        def kill() -> None:
            try:
                os.killpg(done.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        killer = threading.Timer(timeout, kill)
        killer.start()
        try:
            done.wait()
        except BaseException:  # Ctrl-C: the run goes too
            kill()
            done.wait()
            raise
        finally:
            killer.cancel()
        seconds = time.perf_counter() - started
        if done.returncode == -signal.SIGKILL and seconds >= timeout:
            stderr.seek(0)
            sys.exit(f"bench: {what} did not end in {timeout:.0f} s (killed): {' '.join(command)}\n"
                     + stderr.read().decode(errors="replace")[-3000:])
        stdout.seek(0)
        stderr.seek(0)
        printed, errors = stdout.read().decode(errors="replace"), stderr.read().decode(errors="replace")
    if done.returncode != 0:
        sys.exit(f"bench: {what} failed (exit {done.returncode}): {' '.join(command)}\n{errors[-3000:]}\n{printed[-2000:]}")
    if events_dir is not None and key and command[0] == IMGCTL:
        (events_dir / f"{key.replace(' ', '-')}-{len(samples[key]) + 1}.jsonl").write_text(printed)
    events = []
    for line in printed.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                pass
    if events and not events[-1].get("ok", True):
        sys.exit(f"bench: {what}: the summary says not ok\n{errors[-3000:]}")
    return seconds, events


def measure(key: str, command: list[str], env: dict[str, str], *registries: RegistryServer) -> list[dict]:
    slices = [Slice(r).start() for r in registries]
    seconds, events = timed(command, env, key, key)
    samples[key].append(seconds)
    lines = [line for s in slices for line in s.lines()]
    requests_seen[key].append(count_requests(lines))
    if events_dir is not None:
        (events_dir / f"{key.replace(' ', '-')}-{len(samples[key])}.access.log").write_text("\n".join(lines) + "\n")
    if events:
        events_seen[key].append(Counter(e["type"] for e in events))
    return events


def built(events: list[dict]) -> set[str]:
    return {e["image"] for e in events if e["type"] == "build_done"}


def check_tags(registry: RegistryServer, repo: str, version: str) -> None:
    minor = version.rsplit(".", 1)[0]
    expected = {version, minor, "latest"}
    found = set(registry.tags(repo))
    if not expected <= found:
        sys.exit(f"bench: {registry.host}/{repo} has tags {sorted(found)}, not {sorted(expected)}")


# -- rounds -------------------------------------------------------------------------------------

def imgctl_round(folder: Path, work: Path, env: dict[str, str], only: set[str]) -> None:
    namespace = f"f{uuid.uuid4().hex[:8]}"
    with RegistryServer(work / f"registry-{namespace}") as registry:
        prefix = f"{registry.host}/{namespace}"
        config = release_config(folder, registry.host, namespace)
        logs = work / "logs" / namespace  # imgctl's build logs (else a new folder in /tmp per run)
        release = [IMGCTL, "release", "-c", str(config), "-o", "json", "--log-dir", str(logs), *builder]
        try:
            events = measure("cold imgctl", release + ["--version", VERSION, "--no-cache"], env, registry)
            notes["cold imgctl"].append(f"{len(built(events))} built")
            check_tags(registry, f"{namespace}/leaf88", VERSION)
            if "cached" in only:
                measure("cached imgctl", release + ["--version", VERSION], env, registry)
            if "noop" in only:
                events = measure("noop imgctl", release + ["--version", NOOP, "--skip-unchanged"], env, registry)
                check_tags(registry, f"{namespace}/leaf88", NOOP)
            if "subtree" in only:
                own = folder / CHANGED / "own.txt"
                original = own.read_text()
                own.write_text(original + f"changed {uuid.uuid4().hex}\n")
                try:
                    events = measure("subtree imgctl", release + ["--version", SUBTREE, "--skip-unchanged"], env, registry)
                finally:
                    own.write_text(original)
                names = built(events)
                notes["subtree imgctl"].append(
                    f"{len(names)} built, expected {len(SUBTREE_EXPECTED)} (1 + {len(SUBTREE_EXPECTED) - 1} leaves): "
                    + ("exactly the subtree" if names == SUBTREE_EXPECTED else
                       f"extra {sorted(names - SUBTREE_EXPECTED)}, missing {sorted(SUBTREE_EXPECTED - names)}"))
                check_tags(registry, f"{namespace}/leaf83", SUBTREE)
            if "promote" in only:
                seconds, _ = timed(release + ["--version", RC], env, "release of the rc")
                samples["(setup) rc release imgctl"].append(seconds)
                rc_digest = registry.manifest_digest(f"{namespace}/leaf88", RC)
                promote = [IMGCTL, "promote", "-c", str(config), "--from", RC, "--version", FINAL, "-o", "json"]
                measure("promote imgctl", promote, env, registry)
                check_tags(registry, f"{namespace}/leaf88", FINAL)
                if registry.manifest_digest(f"{namespace}/leaf88", "latest") != rc_digest:
                    sys.exit("bench: after the promotion, leaf88:latest is not the rc's image")
        finally:
            remove_images(prefix + "/")
    shutil.rmtree(work / f"registry-{namespace}", ignore_errors=True)


def script_round(folder: Path, work: Path, env: dict[str, str], only: set[str]) -> None:
    namespace = f"f{uuid.uuid4().hex[:8]}"
    with RegistryServer(work / f"registry-{namespace}") as registry:
        prefix = f"{registry.host}/{namespace}"
        command = ["bash", SCRIPT, prefix, VERSION, str(folder)]
        try:
            measure("cold script", command + ["--no-cache"], env, registry)
            check_tags(registry, f"{namespace}/leaf88", VERSION)
            if "cached" in only:
                measure("cached script", command, env, registry)
        finally:
            remove_images(prefix + "/")
    shutil.rmtree(work / f"registry-{namespace}", ignore_errors=True)


LAYERS = 8  # the second image of `copy`: BIG_BYTES in this many layers


def big_source(work: Path, env: dict[str, str]) -> tuple[RegistryServer, Path]:
    """A registry holding big/big:1.0.0-rc.1, one layer of BIG_BYTES random bytes, and
    big/layers:1.0.0-rc.1, the same bytes in LAYERS layers."""
    source = RegistryServer(work / "registry-source").start()
    try:
        for name, parts in (("big", 1), ("layers", LAYERS)):
            context = work / "big" / name
            context.mkdir(parents=True)
            lines = ["FROM scratch"]
            for part in range(parts):
                with open(context / f"random{part}.bin", "wb") as f:
                    for _ in range(BIG_BYTES // parts // 2_500_000):
                        f.write(os.urandom(2_500_000))
                lines.append(f"COPY random{part}.bin /random{part}.bin")
            (context / "Dockerfile").write_text("\n".join(lines) + "\n")
            ref = f"{source.host}/big/{name}:{BIG_RC}"
            for command in (["docker", "build", "-q", "-t", ref, str(context)], ["docker", "push", "-q", ref]):
                done = subprocess.run(command, env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    sys.exit(f"bench: {' '.join(command)} failed:\n{done.stderr[-3000:]}")
    except BaseException:
        source.stop()
        raise
    finally:
        remove_images(f"{source.host}/big/")
    return source, work / "big"


COPIERS = ["imgctl", "skopeo", "imgctl 1 tag", "skopeo 3 tags", f"imgctl {LAYERS} layers", f"skopeo {LAYERS} layers"]


def copy_round(tool: str, source: RegistryServer, folder: Path, work: Path, env: dict[str, str]) -> None:
    """One copy into a fresh registry: `imgctl` promotes big to 3 tags (each verified), `skopeo 3
    tags` makes the same 3 tags with 3 `skopeo copy` runs (the second and third find the blobs
    there); `imgctl 1 tag` and `skopeo` make one; `... 8 layers` copy the image of 8 layers to one tag."""
    name = f"dest-{tool.replace(' ', '-')}-{uuid.uuid4().hex[:6]}"
    repo = "layers" if tool.endswith(" layers") else "big"
    ref = f"{source.host}/big/{repo}:{BIG_RC}"
    one = tool.endswith((" 1 tag", " layers")) or tool == "skopeo"
    final_tags = [BIG_FINAL] if one else [BIG_FINAL, BIG_FINAL.rsplit(".", 1)[0], "latest"]
    with RegistryServer(work / f"registry-{name}") as dest:
        if tool.startswith("imgctl"):
            config = folder / f"{name}.yaml"
            tags = "['{version}']" if len(final_tags) == 1 else "['{version}', '{major}.{minor}', latest]"
            config.write_text(
                "registries:\n"
                f"  - {{name: staging, url: '{source.host}', namespace: big}}\n"
                f"  - {{name: prod, url: '{dest.host}', namespace: big}}\n"
                f"images:\n  - name: {repo}\n    context: {repo}\n    tags: {tags}\n")
            command = [IMGCTL, "promote", "-c", str(config), "--from", BIG_RC, "--version", BIG_FINAL,
                       "--from-registry", "staging", "-o", "json"]
        else:
            copies = [["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
                       f"docker://{ref}", f"docker://{dest.host}/big/{repo}:{tag}"] for tag in final_tags]
            command = copies[0] if len(copies) == 1 else ["sh", "-c", " && ".join(shlex.join(c) for c in copies)]
        if tool == "imgctl":  # for scale: the same command's fixed cost (start-up, config, plans), no request
            samples["copy imgctl --dry-run"].append(timed([*command, "--dry-run"], env, "promote --dry-run")[0])
        measure(f"copy {tool}", command, env, source, dest)
        wanted = source.manifest_digest(f"big/{repo}", BIG_RC)
        same = all(dest.manifest_digest(f"big/{repo}", tag) == wanted for tag in final_tags)
        notes[f"copy {tool}"].append("same digest" if same else "DIGEST DIFFERS from the source")
    shutil.rmtree(work / f"registry-{name}", ignore_errors=True)


# -- report -------------------------------------------------------------------------------------

def median(key: str) -> float | None:
    return statistics.median(samples[key]) if samples.get(key) else None


def event_median(key: str, *types: str) -> float | None:
    rounds = events_seen.get(key)
    if not rounds:
        return None
    return statistics.median(sum(c[t] for t in types) for c in rounds)


def report() -> None:
    print("\n| run | imgctl | baseline | ratio | target |\n|---|---|---|---|---|")

    def ratio_row(name: str, ours: str, theirs: str, target: str, limit: float | None) -> None:
        a, b = median(ours), median(theirs)
        if a is None:
            return
        if b is None:
            print(f"| {name} | {a:.2f} s | – | – | {target} |")
            return
        ratio = f"{a / b:.2f}×"
        n = min(len(samples[ours]), len(samples[theirs]))
        if n > 1:
            ratio += f" (by round: {statistics.median(x / y for x, y in zip(samples[ours][:n], samples[theirs][:n])):.2f}×)"
        verdict = "" if limit is None else f" ({'met' if a / b <= limit else 'missed'})"
        print(f"| {name} | {a:.2f} s | {b:.2f} s | {ratio} | {target}{verdict} |")

    def seconds_row(name: str, key: str, target: str, limit: float, extra: str = "") -> None:
        a = median(key)
        if a is not None:
            print(f"| {name} | {a:.2f} s{extra} | – | – | {target} ({'met' if a < limit else 'missed'}) |")

    ratio_row("f. cold release, 100 images, `--no-cache` (script: build/tag/push in turn)", "cold imgctl", "cold script",
              "≤ 0.6×", 0.6)
    ratio_row("f. cached re-run, same version", "cached imgctl", "cached script", "≤ 0.5×", 0.5)
    if median("noop imgctl") is not None:
        rounds = events_seen["noop imgctl"]
        builds = max(c["build_done"] for c in rounds)
        pushes = max(c["push_started"] for c in rounds)
        met = median("noop imgctl") < 3 and builds == 0 and pushes == 0
        print(f"| f. `--skip-unchanged`, new version, nothing changed | {median('noop imgctl'):.2f} s; {builds} builds, "
              f"{pushes} pushes (most in a round) | – | – | < 3 s, no build, no push ({'met' if met else 'missed'}) |")
    if median("subtree imgctl") is not None:
        builds = event_median("subtree imgctl", "build_done")
        print(f"| f. `--skip-unchanged`, {CHANGED} changed, new version | {median('subtree imgctl'):.2f} s; "
              f"{builds:.0f} built | – | – | exactly its subtree, {len(SUBTREE_EXPECTED)} images "
              f"({'met' if all('exactly' in n for n in notes['subtree imgctl']) else 'missed'}) |")
    if median("promote imgctl") is not None:
        moved = event_median("promote imgctl", "tag_added")
        seconds_row("f. `imgctl promote`, 100 images × 3 tags, within one registry", "promote imgctl", "< 3 s", 3,
                    f"; {moved:.0f} tags moved")
    ratio_row(f"f. `imgctl promote` of one {BIG_BYTES // 10**6} MB image to a 2nd registry, 3 tags "
              "(vs `skopeo copy` to each of the 3)", "copy imgctl", "copy skopeo 3 tags", "≤ 1.1×", 1.1)
    ratio_row("f. the same, 1 tag (vs one `skopeo copy`)", "copy imgctl 1 tag", "copy skopeo", "≤ 1.1×", 1.1)
    ratio_row("f. (for scale) 3 tags (vs one `skopeo copy`, 1 tag)", "copy imgctl", "copy skopeo", "–", None)
    ratio_row(f"f. (for scale) the same {BIG_BYTES // 10**6} MB in {LAYERS} layers, 1 tag (vs one `skopeo copy`)",
              f"copy imgctl {LAYERS} layers", f"copy skopeo {LAYERS} layers", "–", None)
    if median("copy imgctl --dry-run") is not None:
        print(f"| f. (for scale) the same `imgctl promote --dry-run`: start-up, config, plans | "
              f"{median('copy imgctl --dry-run'):.2f} s | – | – | – |")

    print("\nsamples (seconds):")
    for key, values in samples.items():
        print(f"  {key}: " + ", ".join(f"{v:.2f}" for v in values))
    print("\nevents per run (each round):")
    for key, rounds in events_seen.items():
        wanted = ("build_done", "push_started", "push_done", "tag_added", "unchanged", "reused", "verified",
                  "blob_copied", "retrying", "warning", "image_failed")
        print(f"  {key}: " + " | ".join(", ".join(f"{t} {c[t]}" for t in wanted if c[t]) or "-" for c in rounds))
    for key, values in notes.items():
        print(f"  {key}: " + "; ".join(values))

    print(f"\nREQUESTS PER IMAGE BY KIND (registry access log; medians over rounds; {COUNT} images, copy: 1 image)")
    print("| run | agent | " + " | ".join(KINDS) + " | total | 5xx |")
    print("|---|---|" + "---|" * (len(KINDS) + 2))
    for key, rounds in requests_seen.items():
        per = 1 if key.startswith("copy") else COUNT
        agents = sorted({agent for counted in rounds for agent, _ in counted}, key=lambda a: (a != "imgctl", a))
        for agent in agents:
            cells = []
            for kind in KINDS + ["total", "5xx"]:
                if kind == "total":
                    value = statistics.median(sum(n for (a, k), n in c.items() if a == agent and k != "5xx") for c in rounds)
                else:
                    value = statistics.median(c[agent, kind] for c in rounds)
                cells.append(f"{value / per:.2f}" if value else "0")
            print(f"| {key} | {agent} | " + " | ".join(cells) + " |")


def main() -> None:
    global profile_dir, py_spy, timeout, events_dir, builder, imgctl_tmp
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--script-runs", type=int, default=None, help="rounds that run the script too [default: --runs]")
    parser.add_argument("--only", default="cold,cached,noop,subtree,promote,copy",
                        help="runs to take, e.g. cold,cached or copy (noop, subtree and promote release cold first)")
    parser.add_argument("--src", type=Path, default=REPO / "src",
                        help="the imgctl to measure: a source tree put first on PYTHONPATH, e.g. from "
                             "`git archive COMMIT src | tar -x -C DIR` [default: this checkout's src]")
    parser.add_argument("--builder", choices=["auto", "classic", "buildkit"],
                        help="imgctl release --builder [default: none given, so the config's auto: BuildKit here]")
    parser.add_argument("--timeout", type=float, default=timeout, help="seconds any one run may take [default: %(default)s]")
    parser.add_argument("--events", metavar="DIR", type=Path,
                        help="keep each imgctl run's JSON events, and each run's access-log lines, in DIR")
    parser.add_argument("--py-spy", metavar="DIR", type=Path,
                        help="profile every imgctl run with py-spy (raw stacks into DIR): not for figures")
    args = parser.parse_args()
    only = set(args.only.split(","))
    unknown = only - {"cold", "cached", "noop", "subtree", "promote", "copy"}
    if unknown:
        parser.error(f"unknown runs: {', '.join(sorted(unknown))}")
    script_runs = args.runs if args.script_runs is None else args.script_runs
    timeout = args.timeout
    builder = ["--builder", args.builder] if args.builder else []
    if args.events:
        events_dir = args.events.resolve()
        events_dir.mkdir(parents=True, exist_ok=True)
    src = args.src.resolve()
    if not (src / "imgctl" / "__init__.py").exists():
        parser.error(f"--src {src}: no imgctl package there")
    if args.py_spy:
        profile_dir, py_spy = args.py_spy.resolve(), shutil.which("py-spy")
        if not py_spy:
            parser.error("--py-spy: no py-spy on PATH")
        profile_dir.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        sys.exit("bench: the Docker engine is not answering (run `bash scripts/setup.sh`)")
    machine(True)
    commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True)
    print(f"checkout {commit.stdout.strip()}; imgctl from {src}; {COUNT} images, {MIDS} mids, {LEAVES} leaves", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench: terminated"))  # still clean up
    work = Path(tempfile.mkdtemp(prefix="imgctl-bench-f-"))
    (work / "docker-config").mkdir()
    (work / "tmp").mkdir()
    imgctl_tmp = str(work / "tmp")
    (work / "docker-config" / "config.json").write_text("{}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKERHUB_", "IMGCTL_", "GITHUB_"))}
    env.update(DOCKER_CONFIG=str(work / "docker-config"), DOCKER_BUILDKIT="0", SOURCE_DATE_EPOCH="1700000000")
    env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [os.environ.get("PYTHONPATH")])])
    compileall.compile_dir(src / "imgctl", quiet=1)  # as an install does (see bench/run.py)
    started = time.monotonic()
    source = None
    try:
        write_contexts(work / "contexts")
        releases = only & {"cold", "cached", "noop", "subtree", "promote"}
        script = only & {"cold", "cached"}
        if "copy" in only:
            source, big = big_source(work, env)
        for i in range(args.runs):
            tools = ["imgctl", "script"]
            for tool in tools[i % 2:] + tools[:i % 2]:
                if tool == "imgctl" and releases:
                    imgctl_round(work / "contexts", work, env, only)
                elif tool == "script" and script and i < script_runs:
                    script_round(work / "contexts", work, env, only)
            if "copy" in only:
                assert source is not None
                for tool in COPIERS[i % len(COPIERS):] + COPIERS[:i % len(COPIERS)]:
                    copy_round(tool, source, big, work, env)
            print(f"run {i + 1}/{args.runs} done at {time.monotonic() - started:.0f} s", flush=True)
    finally:
        if source is not None:
            source.stop()
        shutil.rmtree(work, ignore_errors=True)
    report()
    print(f"\ntotal {time.monotonic() - started:.0f} s; load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
