"""Release semantics on the real engine: the parallel graph, floating tags, pre-releases,
nightly runs, the run lock, several registries, labels and `imgctl plan`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.conftest import AUTH_PASSWORD, AUTH_USER, chain_config, unique, write_base_context, write_config, write_context
from tests.support.faultproxy import FaultProxy, Rule
from tests.support.registry import RegistryServer

pytestmark = pytest.mark.engine

# Each RUN keeps a core busy for about half a second, so overlapping builds show in the timestamps.
BURN = 'RUN i=0; end=$(( $(date +%s) + 1 )); while [ "$(date +%s)" -lt "$end" ]; do i=$((i+1)); done; echo "burned $i"\n'


def child(base_arg: str, *, burn: bool = True, extra: str = "") -> str:
    return f"ARG {base_arg}\nFROM ${{{base_arg}}}\n" + (BURN if burn else "") + extra



def graph_config(tmp_path: Path, host: str, ns: str) -> Path:
    """6 images in 3 levels; dependencies declared for some, inferred from FROM for the others."""
    write_base_context(tmp_path / "base1", BURN)
    write_base_context(tmp_path / "base2", BURN)
    write_context(tmp_path / "mid1", child("B"))
    write_context(tmp_path / "mid2", child("B"))
    write_context(tmp_path / "mid3", f"FROM {host}/{ns}/base1:{{V}}\n".replace("{V}", "${V}").replace("FROM", "ARG V\nFROM", 1) + BURN)
    write_context(tmp_path / "top", child("B"))
    ref = "{registry}/{namespace}/%s:{version}"
    return write_config(tmp_path, {
        "registry": host, "namespace": ns,
        "images": [
            {"name": "top", "context": "top", "build_args": {"B": ref % "mid1"}, "tags": ["{version}", "latest"]},
            {"name": "mid1", "context": "mid1", "build_args": {"B": ref % "base1"}, "tags": ["{version}", "latest"]},
            {"name": "mid2", "context": "mid2", "build_args": {"B": ref % "base2"}, "depends_on": ["base2"],
             "tags": ["{version}", "latest"]},
            {"name": "mid3", "context": "mid3", "build_args": {"V": "{version}"}, "depends_on": ["base2"],
             "tags": ["{version}", "latest"]},
            {"name": "base1", "context": "base1", "tags": ["{version}", "latest"]},
            {"name": "base2", "context": "base2", "tags": ["{version}", "latest"]},
        ],
    })


def test_graph_builds_in_parallel_and_respects_every_dependency(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    config = graph_config(tmp_path, registry.host, ns)
    planned = imgctl("plan", "-c", str(config), "--version", "3.1.0", "--json")
    assert planned.code == 0, planned.output
    plan = json.loads(planned.stdout)
    deps = {i["name"]: set(i["depends_on"]) for i in plan["images"]}
    assert deps == {
        "base1": set(), "base2": set(), "mid1": {"base1"}, "mid2": {"base2"}, "mid3": {"base1", "base2"},
        "top": {"mid1"},
    }
    inferred = {i["name"]: i["inferred_from"] for i in plan["images"]}
    assert inferred == {"base1": [], "base2": [], "mid1": ["base1"], "mid2": [], "mid3": ["base1"], "top": ["mid1"]}
    order = [i["name"] for i in plan["images"]]
    for name, needs in deps.items():
        assert all(order.index(d) < order.index(name) for d in needs), (name, order)
    assert plan["levels"] == [["base1", "base2"], ["mid1", "mid2", "mid3"], ["top"]]

    run = imgctl("release", "-c", str(config), "--version", "3.1.0", "--jobs", "3", "--output", "json")
    assert run.code == 0, run.output
    started = {e["image"]: e["time"] for e in run.of_type("image_started")}
    built = {e["image"]: e["time"] for e in run.of_type("build_done")}
    done = {e["image"]: e["time"] for e in run.of_type("image_done")}
    pushing = {}
    for e in run.of_type("push_started"):
        pushing.setdefault(e["image"], e["time"])
    # every image builds only after each of its dependencies was built, and pushes only after
    # each of them was pushed
    for name, needs in deps.items():
        for dep in needs:
            assert started[name] >= built[dep], (name, dep)
            assert pushing[name] >= done[dep], (name, dep)
    # independent builds overlapped: the two bases, and the three mids
    assert started["base2"] < done["base1"] and started["base1"] < done["base2"]
    mids = ["mid1", "mid2", "mid3"]
    assert max(started[m] for m in mids) < min(done[m] for m in mids)
    for name in deps:
        assert registry.manifest_digest(f"{ns}/{name}", "latest") == registry.manifest_digest(f"{ns}/{name}", "3.1.0")


def test_with_one_slot_the_longest_chain_builds_first(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    """-j 1, config order solo, base, mid, top (a chain): each time the slot frees, the image with
    the longest chain after it builds; solo, first in the file, waits for the one before top."""
    write_base_context(tmp_path / "solo")
    write_base_context(tmp_path / "base")
    write_context(tmp_path / "mid", child("B", burn=False))
    write_context(tmp_path / "top", child("B", burn=False))
    ref = "{registry}/{namespace}/%s:{version}"
    config = write_config(tmp_path, {"registry": registry.host, "namespace": unique(), "images": [
        {"name": "solo", "context": "solo", "tags": ["{version}"]},
        {"name": "base", "context": "base", "tags": ["{version}"]},
        {"name": "mid", "context": "mid", "build_args": {"B": ref % "base"}, "tags": ["{version}"]},
        {"name": "top", "context": "top", "build_args": {"B": ref % "mid"}, "tags": ["{version}"]},
    ]})
    run = imgctl("release", "-c", str(config), "--version", "1.0.0", "--no-push", "-j", "1", "--output", "json")
    assert run.code == 0, run.output
    assert [e["image"] for e in run.of_type("image_started")] == ["base", "mid", "solo", "top"]
    done = {e["image"]: e["time"] for e in run.of_type("build_done")}
    started = {e["image"]: e["time"] for e in run.of_type("image_started")}
    assert started["mid"] >= done["base"] and started["solo"] >= done["mid"] and started["top"] >= done["solo"]


def test_failed_image_skips_dependents_and_holds_latest(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    write_base_context(tmp_path / "base")
    write_context(tmp_path / "app", child("B", burn=False, extra='ARG FAIL\nRUN test "$FAIL" != yes || { echo "failing on purpose"; exit 1; }\n'))
    write_context(tmp_path / "tool", child("B", burn=False))
    ref = "{registry}/{namespace}/%s:{version}"
    data = {
        "registry": registry.host, "namespace": ns,
        "images": [
            {"name": "base", "context": "base", "tags": ["{version}", "latest"]},
            {"name": "app", "context": "app", "build_args": {"B": ref % "base", "FAIL": "no"}, "tags": ["{version}", "latest"]},
            {"name": "tool", "context": "tool", "build_args": {"B": ref % "app"}, "tags": ["{version}", "latest"]},
        ],
    }
    config = write_config(tmp_path, data)
    first = imgctl("release", "-c", str(config), "--version", "1.0.0")
    assert first.code == 0, first.output
    latest_before = {n: registry.manifest_digest(f"{ns}/{n}", "latest") for n in ("base", "app", "tool")}

    data["images"][1]["build_args"]["FAIL"] = "yes"
    write_config(tmp_path, data)
    second = imgctl("release", "-c", str(config), "--version", "1.1.0", "--output", "json")
    assert second.code == 1, second.output
    assert [e["image"] for e in second.of_type("image_skipped")] == ["tool"]
    assert "dependency app failed" in second.of_type("image_skipped")[0]["reason"]
    held = second.of_type("floating_held")
    assert [h["reason"] for h in held] == ["1 image failed, 1 skipped"]
    # base 1.1.0 (immutable) was released; no latest moved
    assert registry.manifest_digest(f"{ns}/base", "1.1.0") is not None
    assert registry.manifest_digest(f"{ns}/app", "1.1.0") is None
    assert {n: registry.manifest_digest(f"{ns}/{n}", "latest") for n in latest_before} == latest_before
    assert "held back: 1 image failed, 1 skipped" in second.stderr


def _base_and_app(tmp_path: Path, host: str, ns: str) -> Path:
    return chain_config(tmp_path, host, ns, {"app": BURN})


def test_dependents_build_while_their_base_pushes_and_push_after_it(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    # base's push is held for 4 s at its manifest: app, built FROM the local base, must not wait for it
    rule = Rule("PUT", rf"^/v2/{ns}/base/manifests/", "stall", count=1, stall_seconds=4)
    with FaultProxy(registry.host, [rule]) as proxy:
        run = imgctl("release", "-c", str(_base_and_app(tmp_path, proxy.host, ns)), "--version", "1.0.0", "-o", "json")
        assert proxy.fired(rule) == 1
    assert run.code == 0, run.output
    at = {(e["type"], e["image"]): e["time"] for e in reversed(run.events()) if e.get("image")}  # first of each
    assert at["build_done", "base"] <= at["image_started", "app"] < at["image_done", "base"]
    assert at["push_started", "app"] >= at["image_done", "base"]
    for name in ("base", "app"):
        assert registry.manifest_digest(f"{ns}/{name}", "latest") == registry.manifest_digest(f"{ns}/{name}", "1.0.0")


def test_a_base_that_fails_to_push_keeps_its_built_dependents_unpublished(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    rule = Rule("PUT", rf"^/v2/{ns}/base/manifests/", "status", count=100, status=403)
    with FaultProxy(registry.host, [rule]) as proxy:
        run = imgctl("release", "-c", str(_base_and_app(tmp_path, proxy.host, ns)), "--version", "1.0.0", "-o", "json")
        assert proxy.fired(rule) >= 1
    assert run.code == 1, run.output
    assert [e["image"] for e in run.of_type("build_done")] == ["base", "app"]  # app built meanwhile...
    assert [e["image"] for e in run.of_type("image_failed")] == ["base"]
    skipped = run.of_type("image_skipped")
    assert [(e["image"], e["reason"]) for e in skipped] == [("app", "dependency base failed; not pushed")]
    assert not [e for e in run.of_type("push_started") if e["image"] == "app"]  # ...and never pushed
    assert registry.tags(f"{ns}/app") == [] and registry.tags(f"{ns}/base") == []
    assert [h["reason"] for h in run.of_type("floating_held")] == ["1 image failed, 1 skipped"]


def test_prerelease_moves_no_floating_tag(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    write_base_context(tmp_path / "base")
    config = write_config(tmp_path, {
        "registry": registry.host, "namespace": ns,
        "images": [{"name": "base", "context": "base", "tags": ["{version}", "{major}", "{major}.{minor}", "latest"]}],
    })
    assert imgctl("release", "-c", str(config), "--version", "1.2.0").code == 0
    before = {t: registry.manifest_digest(f"{ns}/base", t) for t in ("1", "1.2", "latest")}
    write_base_context(tmp_path / "base", 'RUN echo changed > /changed\n')  # a different image
    run = imgctl("release", "-c", str(config), "--version", "1.3.0-rc.1")
    assert run.code == 0, run.output
    assert sorted(registry.tags(f"{ns}/base")) == ["1", "1.2", "1.2.0", "1.3.0-rc.1", "latest"]
    assert {t: registry.manifest_digest(f"{ns}/base", t) for t in before} == before
    assert registry.manifest_digest(f"{ns}/base", "1.3.0-rc.1") != before["latest"]
    assert "pre-release 1.3.0-rc.1" in run.output


def test_nightly_tags_carry_todays_utc_date(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    write_base_context(tmp_path / "base")
    config = write_config(tmp_path, {
        "registry": registry.host, "namespace": ns,
        "images": [{"name": "base", "context": "base", "tags": ["{version}", "latest"]}],
    })
    run = imgctl("release", "-c", str(config), "--nightly", "--output", "json")
    today = datetime.now(timezone.utc).strftime("%Y%m%d")
    assert run.code == 0, run.output
    assert sorted(registry.tags(f"{ns}/base")) == sorted(["nightly", f"nightly-{today}"])
    labels = _labels(f"{registry.host}/{ns}/base:nightly-{today}")
    assert labels["org.opencontainers.image.version"] == f"nightly-{today}"


def test_overlapping_run_is_refused_and_a_dead_holder_leaves_no_lock(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    write_base_context(tmp_path / "base")
    config = write_config(tmp_path, {
        "registry": registry.host, "namespace": unique(),
        "images": [{"name": "base", "context": "base"}],
    })
    holder_code = (
        "import sys, time; from pathlib import Path; from imgctl.lock import run_lock\n"
        "with run_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    holder = subprocess.Popen([sys.executable, "-c", holder_code, str(config)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        refused = imgctl("release", "-c", str(config), "--version", "1.0.0", "--lock-timeout", "1")
        assert refused.code == 75, refused.output
        assert time.monotonic() - started >= 1.0
        assert "another imgctl run holds the lock" in refused.stderr
        assert "Traceback" not in refused.output
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: no chance to clean up
        holder.wait()
    after = imgctl("release", "-c", str(config), "--version", "1.0.0")
    assert after.code == 0, after.output


def test_several_registries_each_with_its_own_credentials(tmp_path: Path, registry: RegistryServer, auth_registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    write_base_context(tmp_path / "base")
    with FaultProxy(registry.host) as proxy:
        data = {
            "registries": [
                {"name": "private", "url": auth_registry.host, "namespace": ns,
                 "auth": {"username_env": "PRIV_USER", "password_env": "PRIV_TOKEN"}},
                {"name": "mirror", "url": proxy.host, "namespace": ns},
            ],
            "images": [{"name": "base", "context": "base", "tags": ["{version}", "latest"]}],
        }
        config = write_config(tmp_path, data)
        env = {"PRIV_USER": AUTH_USER, "PRIV_TOKEN": AUTH_PASSWORD}
        ok = imgctl("release", "-c", str(config), "--version", "1.0.0", "--output", "json", env=env)
        assert ok.code == 0, ok.output
        assert auth_registry.manifest_digest(f"{ns}/base", "1.0.0") is not None
        assert registry.manifest_digest(f"{ns}/base", "latest") is not None

        # the mirror refuses manifests: the private registry still gets (and reports) its tag
        proxy.add_rule(Rule("PUT", r"/manifests/", "status", count=100, status=400))
        run = imgctl("release", "-c", str(config), "--version", "1.1.0", "--output", "json", env=env)
    assert run.code == 1, run.output
    tags = {t["reference"]: t for t in run.of_type("summary")[0]["images"][0]["tags"]}
    private_ref = f"{auth_registry.host}/{ns}/base:1.1.0"
    assert tags[private_ref]["status"] == "pushed" and tags[private_ref]["verified"]
    assert tags[private_ref]["registry"] == "private"
    assert tags[f"{proxy.host}/{ns}/base:1.1.0"]["status"] == "failed"
    assert auth_registry.manifest_digest(f"{ns}/base", "1.1.0") == tags[private_ref]["digest"]
    assert AUTH_PASSWORD not in run.output + ok.output


def _labels(reference: str) -> dict[str, str]:
    out = subprocess.run(["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", reference],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_oci_labels_and_user_labels_win(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    write_base_context(tmp_path / "base")
    config = write_config(tmp_path, {
        "registry": registry.host, "namespace": ns,
        "images": [{"name": "base", "context": "base", "labels": {"org.opencontainers.image.title": "Custom title"}}],
    })
    env = {"GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567", "GITHUB_REF_NAME": "main",
           "GITHUB_REF_TYPE": "branch", "GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "acme/images"}
    run = imgctl("release", "-c", str(config), "--version", "4.0.0", "--no-push", env=env)
    assert run.code == 0, run.output
    labels = _labels(f"{registry.host}/{ns}/base:4.0.0")
    assert labels["org.opencontainers.image.version"] == "4.0.0"
    assert labels["org.opencontainers.image.revision"] == env["GITHUB_SHA"]
    assert labels["org.opencontainers.image.source"] == "https://github.com/acme/images"
    assert labels["org.opencontainers.image.title"] == "Custom title"
    assert labels["org.opencontainers.image.created"].endswith("Z")
    assert registry.tags(f"{ns}/base") == []  # --no-push pushed nothing


def test_plan_json_touches_no_engine(tmp_path: Path, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    config = graph_config(tmp_path, "127.0.0.1:9", ns)
    env = {"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    run = imgctl("plan", "-c", str(config), "--version", "1.0.0", "--json", env=env)
    assert run.code == 0, run.output
    plan = json.loads(run.stdout)
    assert plan["schema"] == "imgctl.plan/v1" and plan["version"] == "1.0.0"
    top = next(i for i in plan["images"] if i["name"] == "top")
    assert top["build_args"] == {"B": f"127.0.0.1:9/{ns}/mid1:1.0.0"}
    assert {t["reference"]: t["floating"] for t in top["tags"]} == {
        f"127.0.0.1:9/{ns}/top:1.0.0": False, f"127.0.0.1:9/{ns}/top:latest": True,
    }
    dry = imgctl("release", "-c", str(config), "--version", "1.0.0", "--dry-run", env=env)
    assert dry.code == 0 and "immutable 127.0.0.1:9/" in dry.stdout and "floating  127.0.0.1:9/" in dry.stdout
    only = json.loads(imgctl("plan", "-c", str(config), "--version", "1.0.0", "--json", "--only", "top", env=env).stdout)
    assert [i["name"] for i in only["images"]] == ["base1", "mid1", "top"]
    alone = json.loads(imgctl("plan", "-c", str(config), "--version", "1.0.0", "--json", "--only", "top", "--no-deps", env=env).stdout)
    assert [i["name"] for i in alone["images"]] == ["top"]
    images = subprocess.run(["docker", "images", "-q", f"127.0.0.1:9/{ns}/*"], capture_output=True, text=True)
    assert images.stdout.strip() == ""
