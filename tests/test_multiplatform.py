"""Multi-platform images for real: linux/amd64 natively and linux/arm64 under QEMU, each built on
its own, pushed, and assembled into an image index that every tag points at."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgctl.indexes import platform_digests
from imgctl.registry import RegistryClient
from tests.conftest import unique, write_config, write_context
from tests.support.arch import UNAME_M, require_emulation, write_multiarch_base_context
from tests.support.faultproxy import FaultProxy, Rule
from tests.support.registry import RegistryServer

pytestmark = pytest.mark.engine

PLATFORMS = ["linux/amd64", "linux/arm64"]
APP = 'ARG B\nFROM ${B}\nARG TARGETARCH\nRUN echo "app on $(cat /arch) for ${TARGETARCH}" > /app\nCMD ["cat", "/app"]\n'


def _config(tmp_path: Path, host: str, ns: str, **top: object) -> Path:
    write_multiarch_base_context(tmp_path / "base")
    write_context(tmp_path / "app", APP)
    return write_config(tmp_path, {
        "registry": host, "namespace": ns, "platforms": PLATFORMS, **top,
        "images": [
            {"name": "base", "context": "base", "tags": ["{version}", "latest"]},
            {"name": "app", "context": "app", "build_args": {"B": "{registry}/{namespace}/base:{version}"},
             "tags": ["{version}", "{major}.{minor}", "latest"]},
        ],
    })


def _run_platform(reference: str, platform: str, command: list[str]) -> str:
    subprocess.run(["docker", "rmi", "-f", reference], capture_output=True)
    pulled = subprocess.run(["docker", "pull", "-q", "--platform", platform, reference], capture_output=True, text=True)
    assert pulled.returncode == 0, pulled.stderr
    ran = subprocess.run(["docker", "run", "--rm", "--platform", platform, reference, *command], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    return ran.stdout.strip()


def test_one_tag_every_architecture(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    require_emulation()
    ns = unique()
    config = _config(tmp_path, registry.host, ns)
    run = imgctl("release", "-c", str(config), "--version", "1.2.0", "--output", "json",
                 "--report", str(tmp_path / "report.json"))
    assert run.code == 0, run.output
    client = RegistryClient(registry.host, None)
    for name, tags in (("base", ["1.2.0", "latest"]), ("app", ["1.2.0", "1.2", "latest"])):
        index = registry.manifest_digest(f"{ns}/{name}", "1.2.0")
        for tag in tags:
            assert registry.manifest_digest(f"{ns}/{name}", tag) == index, (name, tag)
        manifest = client.manifest(f"{ns}/{name}", tag)
        assert manifest is not None and manifest.is_index
        assert sorted(platform_digests(client, f"{ns}/{name}", "1.2.0")) == PLATFORMS
    # each platform's build used its base's build for the same platform, and runs as that platform
    for platform, arch in (("linux/amd64", "amd64"), ("linux/arm64", "arm64")):
        out = _run_platform(f"{registry.host}/{ns}/app:1.2.0", platform, [])
        assert out == f"app on {UNAME_M[arch]} for {arch}", platform
    # the events say which platform a line belongs to, and carry the index and its children
    steps = {e["platform"] for e in run.of_type("build_step") if e["image"] == "app"}
    assert steps == set(PLATFORMS)
    indexes = {e["repository"]: e for e in run.of_type("index_pushed")}
    app_index = indexes[f"{registry.host}/{ns}/app"]
    assert app_index["digest"] == registry.manifest_digest(f"{ns}/app", "latest")
    assert sorted(app_index["platforms"]) == PLATFORMS
    for platform, child in app_index["platforms"].items():
        assert child["digest"] == platform_digests(client, f"{ns}/app", "1.2.0")[platform]
    report = json.loads((tmp_path / "report.json").read_text())
    app = next(row for row in report["images"] if row["image"] == "app")
    assert sorted(p["platform"] for p in app["platforms"]) == PLATFORMS
    assert all(p["digest"] and p["size"] for p in app["platforms"])
    # no platform clobbered another's local tags
    local = subprocess.run(["docker", "image", "inspect", "--format", "{{.Architecture}}",
                            f"{registry.host}/{ns}/base:1.2.0-linux-arm64", f"{registry.host}/{ns}/base:1.2.0-linux-amd64"],
                           capture_output=True, text=True)
    assert local.stdout.split() == ["arm64", "amd64"], local.stderr
    # history of a platform that is not local is read from the registry
    subprocess.run(["docker", "rmi", "-f", f"{registry.host}/{ns}/app:1.2.0-linux-arm64", f"{registry.host}/{ns}/app:1.2.0",
                    f"{registry.host}/{ns}/app:1.2-linux-arm64", f"{registry.host}/{ns}/app:latest-linux-arm64"], capture_output=True)
    shown = imgctl("history", "app", "-c", str(config), "--tag", "1.2.0", "--platform", "linux/arm64")
    assert shown.code == 0, shown.output
    assert "(from the registry, linux/arm64: compressed sizes)" in shown.stdout and "app on" in shown.stdout


def test_a_failed_platform_moves_no_tag(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    """arm64's RUN fails: the image is a failed image, none of its tags moves, its dependent is skipped."""
    require_emulation()
    ns = unique()
    config = _config(tmp_path, registry.host, ns)
    (tmp_path / "base" / "Dockerfile").write_text(
        (tmp_path / "base" / "Dockerfile").read_text() + 'RUN test "$(cat /arch)" = x86_64\n'
    )
    run = imgctl("release", "-c", str(config), "--version", "1.2.0", "--output", "json")
    assert run.code == 1, run.output
    [failed] = run.of_type("image_failed")
    assert failed["image"] == "base" and failed["error"].startswith("linux/arm64: ")
    assert [e["image"] for e in run.of_type("image_skipped")] == ["app"]
    assert registry.tags(f"{ns}/base") == [] and registry.tags(f"{ns}/app") == []


def test_a_failed_child_push_moves_no_tag(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    require_emulation()
    ns = unique()
    with FaultProxy(registry.host, [Rule("PUT", r"/base/manifests/.*-linux-arm64$", "status", count=100, status=400)]) as proxy:
        config = _config(tmp_path, proxy.host, ns)
        run = imgctl("release", "-c", str(config), "--version", "1.2.0", "--output", "json")
    assert run.code == 1, run.output
    assert [e["image"] for e in run.of_type("image_failed")] == ["base"]
    assert set(registry.tags(f"{ns}/base")) <= {"1.2.0-linux-amd64"}  # the amd64 child at most: no tag of the image
    assert registry.tags(f"{ns}/app") == []


def test_platforms_in_the_plan_and_the_flag(tmp_path: Path, imgctl) -> None:  # type: ignore[no-untyped-def]
    config = _config(tmp_path, "127.0.0.1:5000", "ns")
    plan = json.loads(imgctl("plan", "-c", str(config), "--version", "1.0.0", "--json").stdout)
    assert [i["platforms"] for i in plan["images"]] == [PLATFORMS, PLATFORMS]
    only_arm = json.loads(imgctl("plan", "-c", str(config), "--version", "1.0.0", "--json", "--platform", "linux/arm64,linux/arm/v7").stdout)
    assert only_arm["images"][0]["platforms"] == ["linux/arm64", "linux/arm/v7"]
    bad = imgctl("plan", "-c", str(config), "--version", "1.0.0", "--platform", "arm64")
    assert bad.code == 2 and "--platform: 'arm64' is not a platform" in bad.stderr
    text = imgctl("plan", "-c", str(config), "--version", "1.0.0").stdout
    assert "platforms linux/amd64, linux/arm64 (an image index)" in text


def test_a_base_without_the_platform_is_a_config_error(tmp_path: Path, imgctl) -> None:  # type: ignore[no-untyped-def]
    config = _config(tmp_path, "127.0.0.1:5000", "ns")
    data = json.loads(json.dumps(__import__("yaml").safe_load(config.read_text())))
    data["images"][0]["platforms"] = ["linux/amd64"]
    write_config(tmp_path, data)
    run = imgctl("plan", "-c", str(config), "--version", "1.0.0")
    assert run.code == 2, run.output
    assert "image app builds for linux/arm64 FROM base, which is not built for it" in run.stderr


def test_skip_unchanged_per_index(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    """Reused only if every platform is unchanged; a reused base's platforms are pulled for a dependent."""
    require_emulation()
    ns = unique()
    config = _config(tmp_path, registry.host, ns)
    epoch = {"SOURCE_DATE_EPOCH": "1767225600"}
    assert imgctl("release", "-c", str(config), "--version", "1.0.0", env=epoch).code == 0
    index = {name: registry.manifest_digest(f"{ns}/{name}", "1.0.0") for name in ("base", "app")}

    # (a new version would change app's build arg B, which names base:{version}: its inputs)
    same = imgctl("release", "-c", str(config), "--version", "1.0.0", "--skip-unchanged", "--output", "json", env=epoch)
    assert same.code == 0, same.output
    assert sorted(e["image"] for e in same.of_type("reused")) == ["app", "base"]
    assert not same.of_type("build_step") and not same.of_type("push_started")
    assert {e["image"] for e in same.of_type("unchanged")} == {"base", "app"}
    for name in ("base", "app"):
        for tag in ("1.0.0", "latest"):
            assert registry.manifest_digest(f"{ns}/{name}", tag) == index[name], (name, tag)

    # app changes, base does not: base is reused and its platforms pulled for app's builds
    subprocess.run(f"docker images --format '{{{{.Repository}}}}:{{{{.Tag}}}}' | grep '^{registry.host}/{ns}/base:' | xargs -r docker rmi -f",
                   shell=True, capture_output=True)
    (tmp_path / "app" / "Dockerfile").write_text(APP.replace("app on", "app (changed) on"))
    changed = imgctl("release", "-c", str(config), "--version", "1.0.0", "--skip-unchanged", "--output", "json", env=epoch)
    assert changed.code == 0, changed.output
    assert [e["image"] for e in changed.of_type("reused")] == ["base"]
    assert {e["platform"] for e in changed.of_type("build_step") if e["image"] == "app"} == set(PLATFORMS)
    assert registry.manifest_digest(f"{ns}/base", "1.0.0") == index["base"]
    assert registry.manifest_digest(f"{ns}/app", "1.0.0") not in (None, index["app"])
    out = _run_platform(f"{registry.host}/{ns}/app:1.0.0", "linux/arm64", [])
    assert out == "app (changed) on aarch64 for arm64"


def test_across_runners_platform_jobs_then_merge(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    """Each platform on its own runner (`--platform P --platform-job`: pushes that platform, moves
    no tag), then `--merge`: the index from what the jobs left in the registry, and every tag."""
    require_emulation()
    ns = unique()
    config = _config(tmp_path, registry.host, ns)
    data = __import__("yaml").safe_load(config.read_text())
    write_context(tmp_path / "tool", f"FROM scratch\nLABEL run={ns}\nCOPY Dockerfile /tool\n")  # a single-platform image beside them
    del data["platforms"]  # base and app name their own; tool has none: one image, no index
    for entry in data["images"]:
        entry["platforms"] = PLATFORMS
    data["images"].append({"name": "tool", "context": "tool", "tags": ["{version}", "latest"]})
    write_config(tmp_path, data)
    matrix = json.loads(imgctl("plan", "-c", str(config), "--version", "2.0.0", "--matrix", "--by-platform").stdout)
    assert [(e["platform"], e["flags"]) for e in matrix["include"]] == [
        (p, f"--platform {p} --platform-job") for p in PLATFORMS
    ]
    early = imgctl("release", "-c", str(config), "--version", "2.0.0", "--merge", "--output", "json")
    assert early.code == 1  # no platform job has run: nothing moves
    assert "linux/amd64: no " in early.output and "its platform job has not pushed it" in early.output
    assert registry.tags(f"{ns}/base") == [] and registry.tags(f"{ns}/app") == []
    assert registry.tags(f"{ns}/tool") == ["2.0.0"]  # released as always, but no floating tag moved

    for entry in matrix["include"]:
        job = imgctl("release", "-c", str(config), "--version", "2.0.0", *entry["flags"].split(), "--output", "json")
        assert job.code == 0, job.output
        assert not job.of_type("verified")  # no tag moved
        assert {e["image"] for e in job.of_type("image_skipped")} == {"tool"}
    assert sorted(registry.tags(f"{ns}/app")) == ["2.0.0-linux-amd64", "2.0.0-linux-arm64"]
    assert registry.tags(f"{ns}/tool") == ["2.0.0"]  # platform jobs leave it to the merge job

    merged = imgctl("release", "-c", str(config), "--version", "2.0.0", "--merge", "--output", "json")
    assert merged.code == 0, merged.output
    assert not [e for e in merged.of_type("build_step") if e["image"] != "tool"]  # only tool was built here
    client = RegistryClient(registry.host, None)
    for name in ("base", "app"):
        assert sorted(platform_digests(client, f"{ns}/{name}", "2.0.0")) == PLATFORMS
        assert registry.manifest_digest(f"{ns}/{name}", "latest") == registry.manifest_digest(f"{ns}/{name}", "2.0.0")
    assert sorted(registry.tags(f"{ns}/tool")) == ["2.0.0", "latest"]
    assert _run_platform(f"{registry.host}/{ns}/app:2.0.0", "linux/arm64", []) == "app on aarch64 for arm64"


@pytest.fixture
def without_arm64_emulation() -> Iterator[None]:
    """qemu-aarch64 switched off in binfmt_misc for the test (switched on again after)."""
    entry = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    entry.write_text("0")
    try:
        yield
    finally:
        entry.write_text("1")


def test_a_missing_emulator_gets_a_hint(tmp_path: Path, registry: RegistryServer, without_arm64_emulation: None, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    config = _config(tmp_path, registry.host, ns)
    run = imgctl("release", "-c", str(config), "--version", "1.0.0", "--platform", "linux/arm64", "--no-push", "--no-cache",
                 "--output", "json")
    assert run.code == 1, run.output
    [failed] = run.of_type("image_failed")
    assert "exec format error" in "\n".join(failed["output"]) or "exec format error" in failed["error"]
    assert "the engine cannot run linux/arm64 programs: install QEMU user emulation" in failed["error"]
