"""imgctl against the plain shell script the Docker docs teach, on the real engine.

    python bench/run.py [--runs N] [--only a,b,c,d,e,g]

Runs imgctl and bench/release.sh alternately on the running Docker engine, pushing to a fresh
docker-registry on 127.0.0.1 each round, and prints the medians and the imgctl/script ratio of each
workload. Everything it makes lives in one temp folder and is removed at the end, images included.
Run it with the venv's python (imgctl and docker-py installed); the engine must be running
(`bash scripts/setup.sh` starts it), except for d and g, which only read configs.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "src")]

from tests.support.registry import RegistryServer  # noqa: E402

IMGCTL = str(Path(sys.executable).parent / "imgctl")
SCRIPT = str(REPO / "bench" / "release.sh")
PARALLEL = str(REPO / "bench" / "release-parallel.sh")  # a hand-tuned script, for scale: levels at once
BUSYBOX = Path("/bin/busybox")
VERSION = "1.4.2"
TAGS = '["{version}", "{major}.{minor}", "latest"]'

# name, base: 1 image FROM scratch, 3 FROM it, 4 FROM those
RELEASE = [("base", None), ("mid1", "base"), ("mid2", "base"), ("mid3", "base"),
           ("leaf1", "mid1"), ("leaf2", "mid2"), ("leaf3", "mid3"), ("leaf4", "mid1")]

samples: dict[str, list[float]] = defaultdict(list)


# -- helpers -------------------------------------------------------------------------------------

def run(command: list[str], env: dict[str, str], what: str) -> float:
    """Run to completion, output discarded; return wall seconds. A failure stops the benchmark."""
    os.sync()  # the last run's writes (layers, removed images) go to disk now, not during this run
    started = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"bench: {what} failed (exit {done.returncode}): {' '.join(command)}\n"
                 + done.stderr.decode(errors="replace")[-3000:])
    return seconds


def cpu_busy() -> float:
    """Core-seconds the whole machine has spent busy (user, nice, system, irq, softirq, steal)
    since boot, from /proc/stat: the engine's, its containers', the registry's and the tool's."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def peak_rss(command: list[str], env: dict[str, str], log: Path) -> tuple[float, int, int]:
    """(seconds, peak RSS in bytes, lines written to stderr) of one child process."""
    started = time.perf_counter()
    with open(log, "wb") as err:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # the rusage of this child alone
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"bench: {' '.join(command)} failed:\n{log.read_text(errors='replace')[-3000:]}")
    with open(log, "rb") as f:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    log.unlink()
    return seconds, usage.ru_maxrss * 1024, lines


def remove_images(prefix: str) -> None:
    """Every image under prefix; by id where a newer build took the tag (`repo:<none>`)."""
    for _ in range(3):  # a parent goes only once its children have gone
        listed = subprocess.run(["docker", "images", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}"],
                                capture_output=True, text=True).stdout.split("\n")
        mine = [line.split() for line in listed if " " + prefix in " " + line.partition(" ")[2]]
        if not mine:
            return
        refs = dict.fromkeys(image_id if ref.endswith(":<none>") else ref for image_id, ref in mine)
        subprocess.run(["docker", "rmi", "-f", *refs], capture_output=True)


def image_entry(name: str, context: str, base: str | None = None, extra: str = "") -> str:
    text = f"  - name: {name}\n    context: {context}\n    tags: {TAGS}\n" + extra
    if base:
        text += f"    depends_on: [{base}]\n"
        text += f'    build_args: {{BASE: "{{registry}}/{{namespace}}/{base}:{{version}}"}}\n'
    return text


def write_config(path: Path, host: str, namespace: str, images: str) -> Path:
    path.write_text(f"registry: {host}\nnamespace: {namespace}\nimages:\n{images}")
    return path


def calibrate() -> int:
    """Loop iterations of busybox sh that burn about one second of CPU here."""
    n = 200_000
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([str(BUSYBOX), "sh", "-c", f"i=0; while [ $i -lt {n} ]; do i=$((i+1)); done"], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return int(n / max(cpu, 0.01))


# -- workloads a and b: a release, cold then again ---------------------------------------------

def write_release(folder: Path, loops: int) -> None:
    for name, base in RELEASE:
        context = folder / name
        context.mkdir(parents=True)
        burn = f"RUN i=0; while [ $i -lt {loops} ]; do i=$((i+1)); done; head -c 4m /dev/urandom > /blob-{name}\n"
        if base is None:
            shutil.copy(BUSYBOX, context / "busybox")
            text = 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n' + burn
        else:
            text = "ARG BASE\nFROM ${BASE}\n" + burn
        (context / "Dockerfile").write_text(text)
    (folder / "images.txt").write_text("".join(f"{name} {base or '-'}\n" for name, base in RELEASE))


def release_round(tool: str, folder: Path, work: Path, env: dict[str, str]) -> None:
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    with RegistryServer(work / f"registry-{namespace}") as registry:
        prefix = f"{registry.host}/{namespace}"
        if tool in ("imgctl", "buildkit"):
            images = "".join(image_entry(name, name, base) for name, base in RELEASE)
            config = write_config(folder / f"{namespace}.yaml", registry.host, namespace, images)
            command = [IMGCTL, "release", "-c", str(config), "--version", VERSION, "-o", "plain"]
            command += ["--builder", "buildkit"] if tool == "buildkit" else []
            # --skip-unchanged on the cold run too, as a nightly run has: each image is looked up first
            cold, again = command + ["--no-cache", "--skip-unchanged"], command
        else:
            command = ["bash", SCRIPT if tool == "script" else PARALLEL, prefix, VERSION, str(folder)]
            cold, again = command + ["--no-cache"], command
        try:
            busy = cpu_busy()
            samples[f"a {tool}"].append(run(cold, env, f"cold release with {tool}"))
            samples[f"a cpu {tool}"].append(cpu_busy() - busy)
            assert sorted(registry.tags(f"{namespace}/leaf4")) == sorted([VERSION, "1.4", "latest"])
            if tool != "parallel":  # a reference for a only
                samples[f"b {tool}"].append(run(again, env, f"no-op re-release with {tool}"))
            if tool == "imgctl":
                samples["b imgctl --skip-unchanged"].append(
                    run(again + ["--skip-unchanged"], env, "no-op re-release with imgctl --skip-unchanged")
                )
        finally:
            remove_images(prefix + "/")
    shutil.rmtree(work / f"registry-{namespace}", ignore_errors=True)


# -- workload c: a large build context -----------------------------------------------------------

def write_large(folder: Path) -> None:
    """30,000 files of 2 KiB and 30 of 3 MiB (150 MB); .dockerignore leaves out about a quarter."""
    noise = os.urandom(1 << 20)
    for d in range(300):
        sub = folder / ("src" if d < 240 else "cache") / f"p{d:03d}"
        sub.mkdir(parents=True)
        for i in range(100):
            offset = (d * 100 + i) * 2048 % ((1 << 20) - 2048)
            (sub / f"m{i:03d}.{'log' if i % 10 == 0 else 'py'}").write_bytes(noise[offset:offset + 2048])
    (folder / "data").mkdir()
    for i in range(30):
        (folder / "data" / f"blob{i:02d}.bin").write_bytes(os.urandom(3 << 20))
    (folder / ".dockerignore").write_text("**/*.log\ncache\n!cache/p250\n")
    (folder / "Dockerfile").write_text("FROM scratch\nCOPY . /app\n")


C_TOOLS = ["imgctl", "script"]


def large_round(tool: str, folder: Path, host: str, env: dict[str, str]) -> None:
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    try:
        if tool == "imgctl":
            config = write_config(folder.parent / f"{namespace}.yaml", host, namespace, image_entry("large", folder.name))
            command = [IMGCTL, "release", "-c", str(config), "--version", VERSION, "--no-push", "--no-cache", "-o", "plain"]
        else:
            command = ["docker", "build", "--no-cache", "-t", f"{host}/{namespace}/large:{VERSION}", str(folder)]
        samples[f"c {tool}"].append(run(command, env, f"large-context build with {tool}"))
    finally:
        remove_images(f"{host}/{namespace}/")


def context_only(folder: Path) -> None:
    """The client's share of c: making the context tar, without the engine."""
    from docker.utils import build as docker_build

    from imgctl.context import stream_context

    started = time.perf_counter()
    docker_build.tar(str(folder), exclude=["**/*.log", "cache", "!cache/p250"], dockerfile=("Dockerfile", None)).close()
    samples["c' docker-py tar"].append(time.perf_counter() - started)
    started = time.perf_counter()
    for _ in stream_context(folder, "Dockerfile"):
        pass
    samples["c' imgctl stream"].append(time.perf_counter() - started)
    started = time.perf_counter()
    subprocess.run(f"tar -cf - -C {folder} --exclude='*.log' --exclude=./cache . | cat > /dev/null", shell=True, check=True)
    samples["c' GNU tar"].append(time.perf_counter() - started)


# -- workload d: start-up ------------------------------------------------------------------------

def startup(folder: Path, env: dict[str, str], repeat: int) -> None:
    (folder / "ctx").mkdir(parents=True)
    (folder / "ctx" / "Dockerfile").write_text("ARG BASE=scratch\nFROM ${BASE}\n")
    images = image_entry("img000", "ctx") + "".join(image_entry(f"img{i:03d}", "ctx", "img000") for i in range(1, 200))
    config = write_config(folder / "imgctl.yaml", "127.0.0.1:5999", "bench", images)
    commands = {
        "d python -c pass": [sys.executable, "-c", "pass"],
        "d imgctl --help": [IMGCTL, "--help"],
        "d imgctl validate": [IMGCTL, "validate", "-c", str(config)],
    }
    for _ in range(repeat):
        for key, command in commands.items():
            samples[key].append(run(command, env, key))


# -- workload g: validate and plan of large configs ------------------------------------------------

MANY = (100, 1_000, 5_000)


def write_many(folder: Path, count: int) -> Path:
    """A config of `count` images in 3 levels: 1 base FROM scratch, a tenth FROM it, the rest FROM those.

    Each image but the base names its base in a build arg (so the planner infers the edge from the
    FROM line) and has 3 tags; all but the base share one context and Dockerfile.
    """
    (folder / "ctx").mkdir(parents=True)
    (folder / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /\n")
    (folder / "ctx" / "Dockerfile").write_text("ARG B\nFROM ${B}\nRUN true\n")
    middle = max(1, (count - 1) // 10)
    entries = ["  - name: base\n    tags: ['{version}', latest]\n"]
    for i in range(count - 1):
        base = "base" if i < middle else f"img{i % middle}"
        entries.append(f"  - name: img{i}\n    context: ctx\n    build_args: {{B: '{{registry}}/{{namespace}}/{base}:{{version}}'}}\n"
                       f"    tags: ['{{version}}', '{{major}}.{{minor}}', latest]\n")
    return write_config(folder / "imgctl.yaml", "127.0.0.1:5000", "big", "".join(entries))


def many_images(folder: Path, env: dict[str, str], repeat: int) -> None:
    """Seconds and peak RSS of `imgctl validate` and `imgctl plan` for each size, in turn."""
    configs = {count: write_many(folder / f"n{count}", count) for count in MANY}
    for _ in range(repeat):
        for count, config in configs.items():
            for command in ("validate", "plan"):
                extra = ["--version", VERSION] if command == "plan" else []
                seconds, rss, _ = peak_rss([IMGCTL, command, "-c", str(config), *extra], env, folder / "stderr.log")
                samples[f"g {command} {count}"].append(seconds)
                samples[f"g rss {command} {count}"].append(rss)


# -- workload e: memory while a build prints a lot -----------------------------------------------

def memory(folder: Path, host: str, env: dict[str, str]) -> None:
    for lines in (100_000, 500_000):
        context = folder / f"lines{lines}"
        if not context.exists():
            context.mkdir(parents=True)
            shutil.copy(BUSYBOX, context / "busybox")
            (context / "Dockerfile").write_text(
                f'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\nRUN seq 1 {lines}\n'
            )
        namespace = f"bench{uuid.uuid4().hex[:8]}"
        config = write_config(folder / f"{namespace}.yaml", host, namespace, image_entry("chatty", context.name))
        command = [IMGCTL, "release", "-c", str(config), "--version", VERSION, "--no-push", "--no-cache", "-o", "plain"]
        try:
            seconds, rss, printed = peak_rss(command, env, folder / "stderr.log")
        finally:
            remove_images(f"{host}/{namespace}/")
        if printed < lines:
            sys.exit(f"bench: imgctl printed {printed} lines for a build of {lines}")
        samples[f"e rss {lines}"].append(rss)
        samples[f"e seconds {lines}"].append(seconds)


# -- report --------------------------------------------------------------------------------------

def median(key: str) -> float | None:
    return statistics.median(samples[key]) if samples.get(key) else None


def report() -> None:
    print("\n| workload | imgctl | baseline | ratio | target |\n|---|---|---|---|---|")

    def row(name: str, ours: str, theirs: str, unit: str, target: str, limit: float | None) -> None:
        a, b = median(ours), median(theirs)
        if a is None:
            return
        ratio = f"{a / b:.2f}×" if b else "–"
        if b and len(samples[ours]) == len(samples[theirs]) > 1:  # each round ran both: drift cancels
            ratio += f" (by round: {statistics.median(x / y for x, y in zip(samples[ours], samples[theirs])):.2f}×)"
        verdict = "" if limit is None else (" (met)" if (a / b if b else a) <= limit else " (missed)")
        base = f"{b:.2f} {unit}" if b is not None else "–"
        print(f"| {name} | {a:.2f} {unit} | {base} | {ratio} | {target}{verdict} |")

    row("a. cold release, 8 images (script: build/tag/push in turn)", "a imgctl", "a script", "s", "≤ 0.55×", 0.55)
    row("a. the level-by-level parallel script (for scale)", "a parallel", "a script", "s", "–", None)
    row("a. imgctl against the parallel script", "a imgctl", "a parallel", "s", "–", None)
    row("a. imgctl `--builder buildkit`", "a buildkit", "a script", "s", "≤ 0.55×", 0.55)
    row("a. imgctl `--builder buildkit` against the parallel script", "a buildkit", "a parallel", "s", "–", None)
    cores = os.cpu_count() or 1
    for tool in ("imgctl", "buildkit", "script", "parallel"):
        if median(f"a cpu {tool}") is not None and median("a script"):
            floor = median(f"a cpu {tool}") / cores
            print(f"| a. CPU the machine spent, {tool} (core-seconds, all processes) | {median(f'a cpu {tool}'):.1f} "
                  f"| – | the least it could take on {cores} cores: {floor:.2f} s, {floor / median('a script'):.2f}× "
                  "the script | – |")
    row("b. no-op re-release (cache)", "b imgctl", "b script", "s", "≤ 1.0×", 1.0)
    row("b. no-op re-release, `--builder buildkit` (its cache)", "b buildkit", "b script", "s", "≤ 1.0×", 1.0)
    if median("b imgctl --skip-unchanged") is not None:
        print(f"| b. no-op re-release, `--skip-unchanged` (no build, no push) | {median('b imgctl --skip-unchanged'):.2f} s "
              f"| – | – | < 2 s{' (met)' if median('b imgctl --skip-unchanged') < 2 else ' (missed)'} |")
    row("c. large context, --no-push (vs `docker build`)", "c imgctl", "c script", "s", "≤ 1.1×", 1.1)
    row("c'. context tar only: imgctl stream vs docker-py tar", "c' imgctl stream", "c' docker-py tar", "s", "–", None)
    row("c'. context tar only: GNU tar (for scale)", "c' GNU tar", "", "s", "–", None)
    row("d. `imgctl --help` (baseline: `python -c pass`)", "d imgctl --help", "d python -c pass", "s", "≤ 0.25 s", None)
    row("d. `imgctl validate`, 200 images", "d imgctl validate", "d python -c pass", "s", "≤ 0.5 s", None)
    for key, limit in (("d imgctl --help", 0.25), ("d imgctl validate", 0.5)):
        if median(key) is not None:
            print(f"  {key}: median {median(key):.3f} s -> {'met' if median(key) <= limit else 'missed'} (≤ {limit} s)")
    for count in MANY:
        for command in ("validate", "plan"):
            if median(f"g {command} {count}") is not None:
                limit = " ≤ 1 s" + (" (met)" if median(f"g {command} {count}") <= 1 else " (missed)") if count == 1_000 else ""
                print(f"| g. `imgctl {command}`, {count:,} images | {median(f'g {command} {count}'):.3f} s, "
                      f"{median(f'g rss {command} {count}') / 2**20:.0f} MB | – | – |{limit} |")
    for lines in (100_000, 500_000):
        if median(f"e rss {lines}") is not None:
            print(f"| e. peak RSS, build printing {lines:,} lines | {median(f'e rss {lines}') / 2**20:.0f} MB "
                  f"| – | – | < 150 MB, flat ({median(f'e seconds {lines}'):.1f} s) |")
    print("\nsamples (seconds; e: bytes):")
    for key, values in samples.items():
        print(f"  {key}: " + ", ".join(f"{v:.3f}" if v < 1e6 else f"{v / 2**20:.1f}MB" for v in values))


def machine(with_engine: bool = True) -> None:
    memory_kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    print(f"machine: {os.cpu_count()} cores, {memory_kb / 2**20:.1f} GiB, {platform.platform()}")
    print(f"load average at start: {os.getloadavg()}")
    if not with_engine:
        print(f"Python {platform.python_version()}")
        return
    engine = subprocess.run(["docker", "version", "--format", "{{.Server.Version}} (API {{.Server.APIVersion}})"],
                            capture_output=True, text=True).stdout.strip()
    client = subprocess.run(["docker", "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True).stdout.strip()
    registry = subprocess.run(["docker-registry", "--version"], capture_output=True, text=True).stdout.strip()
    import docker

    print(f"engine {engine}, docker CLI {client}, {registry}, docker-py {docker.__version__}, Python {platform.python_version()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="a,b,c,d,e,g", help="workloads to run, e.g. a,b or d,g")
    args = parser.parse_args()
    only = set(args.only.split(","))
    engine = bool(only & {"a", "b", "c", "e"})  # d and g only read configs
    if engine and subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        sys.exit("bench: the Docker engine is not answering (run `bash scripts/setup.sh`)")
    machine(engine)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench: terminated"))  # still clean up
    work = Path(tempfile.mkdtemp(prefix="imgctl-bench-"))
    (work / "docker-config").mkdir()
    (work / "docker-config" / "config.json").write_text("{}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKERHUB_", "IMGCTL_", "GITHUB_"))}
    env.update(DOCKER_CONFIG=str(work / "docker-config"), DOCKER_BUILDKIT="0")
    # Outside a git checkout imgctl's `created` label would be "now", changing every base image and
    # so rebuilding every image FROM it on a re-release; a fixed source date is what CI has.
    env["SOURCE_DATE_EPOCH"] = "1700000000"
    # A pip-installed imgctl has its bytecode compiled at install; a checkout run with
    # PYTHONDONTWRITEBYTECODE set would compile every module of it on each start instead.
    compileall.compile_dir(REPO / "src" / "imgctl", quiet=1)
    started = time.monotonic()
    try:
        if only & {"a", "b"}:
            loops = calibrate()
            print(f"a/b: {loops} busybox loop iterations per RUN (about 1 s of CPU)")
            write_release(work / "release", loops)
        if "c" in only:
            write_large(work / "large" / "ctx")
        with RegistryServer(work / "registry-shared") if only & {"c", "e"} else contextlib.nullcontext() as shared:
            for i in range(args.runs):
                tools = ["imgctl", "buildkit", "script", "parallel"]
                for tool in tools[i % 4:] + tools[:i % 4]:  # each goes first, second... in turn
                    if only & {"a", "b"}:
                        release_round(tool, work / "release", work, env)
                if "c" in only:
                    for tool in C_TOOLS[i % 2:] + C_TOOLS[:i % 2]:
                        large_round(tool, work / "large" / "ctx", shared.host, env)
                    context_only(work / "large" / "ctx")
                if "e" in only:
                    memory(work / "memory", shared.host, env)
                print(f"run {i + 1}/{args.runs} done at {time.monotonic() - started:.0f} s", flush=True)
            if "d" in only:
                startup(work / "startup", env, repeat=max(10, 5 * args.runs))
            if "g" in only:
                many_images(work / "many", env, repeat=max(5, args.runs))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report()
    print(f"\ntotal {time.monotonic() - started:.0f} s; load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
