"""Promotion without a build: an rc released with the real CLI, then its tags moved (within one
registry), or its images copied whole (blobs mounted or streamed, indexes with their children)
into other registries, against real docker-registry servers. Driven through imgctl.promote's
Python API; the CLI command is wired by the lead."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from imgctl import api
from imgctl.events import Event, TagAdded, Verified
from imgctl.plan import Options
from imgctl.promote import BlobCopied, SourceMissing, SourceResolved, promote
from imgctl.promote_plan import plan_promotion, promotion_text
from imgctl.retry import RetryPolicy
from tests.conftest import AUTH_PASSWORD, AUTH_USER, unique, write_base_context, write_context
from tests.support.faultproxy import FaultProxy, Rule
from tests.support.registry import RegistryServer
from tests.test_release import APP_DOCKERFILE

pytestmark = pytest.mark.engine

RC, FINAL = "1.4.0-rc.2", "1.4.0"
ENV_AUTH = {"auth": {"username_env": "REG_USER", "password_env": "REG_TOKEN"}}


def images_config(tmp_path: Path, registries: list[dict[str, Any]], name: str = "imgctl.yaml", **extra: Any) -> Path:
    """base (busybox FROM scratch) and app FROM it, as tests/test_release's two_image_config, to `registries`."""
    if not (tmp_path / "base").exists():
        write_base_context(tmp_path / "base")
        write_context(tmp_path / "app", APP_DOCKERFILE)
    config = {
        "registries": registries,
        "images": [
            {"name": "base", "context": "base", "tags": ["{version}", "latest"]},
            {"name": "app", "context": "app", "depends_on": ["base"],
             "build_args": {"BASE": "{registry}/{namespace}/base:{version}", "GREETING": "hello {version}"},
             "tags": ["{version}", "{major}.{minor}", "latest"]},
        ],
        **extra,
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def plans(config: Path, source: str = RC, target: str = FINAL):  # type: ignore[no-untyped-def]
    loaded = api.load(config)
    return api.plan(loaded, version=source, options=Options()), api.plan(loaded, version=target, options=Options())


def run_promote(config: Path, environ: dict[str, str], **kwargs: Any) -> tuple[Any, list[Event]]:
    events: list[Event] = []
    plan_from, plan_to = plans(config)
    result = promote(plan_from, plan_to, events.append, environ=environ, policy=RetryPolicy(window=5), **kwargs)
    for event in events:
        json.dumps(event.to_dict())  # every event renders as --output json would
    return result, events


def env_for(docker_config: Path) -> dict[str, str]:
    return {"DOCKER_CONFIG": str(docker_config), "REG_USER": AUTH_USER, "REG_TOKEN": AUTH_PASSWORD}


def release(imgctl, config: Path, *args: str, env: dict[str, str] | None = None) -> None:  # type: ignore[no-untyped-def]
    run = imgctl("release", "-c", str(config), "--version", RC, *args, env=env)
    assert run.code == 0, run.output


def tags_of(result: Any) -> dict[str, tuple[str, str | None, bool]]:
    return {t.reference: (t.status, t.digest, t.verified) for i in result.images for t in i.tags}


# -- within one registry -----------------------------------------------------------------------


def test_rc_promoted_within_one_registry_is_one_put_per_tag(tmp_path: Path, registry: RegistryServer, imgctl,
                                                            docker_config: Path) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    with FaultProxy(registry.host) as proxy:
        config = images_config(tmp_path, [{"name": "hub", "url": proxy.host, "namespace": ns}])
        release(imgctl, config)
        rc = {name: registry.manifest_digest(f"{ns}/{name}", RC) for name in ("base", "app")}
        assert sorted(registry.tags(f"{ns}/app")) == [RC]  # a pre-release moves no floating tag

        plan_from, plan_to = plans(config)
        text = promotion_text(plan_promotion(plan_from, plan_to))
        assert f"app  from {proxy.host}/{ns}/app:{RC}" in text
        assert f"-> {proxy.host}/{ns}/app:1.4  [floating, last]" in text

        before = len(proxy.hits)
        result, events = run_promote(config, env_for(docker_config))
        hits = proxy.hits[before:]
        again, _ = run_promote(config, env_for(docker_config))  # a re-run changes nothing
    assert result.ok and result.exit_code == 0 and result.floating == "pushed", result
    assert sorted(registry.tags(f"{ns}/app")) == sorted(["1.4", FINAL, RC, "latest"])
    assert sorted(registry.tags(f"{ns}/base")) == sorted([FINAL, RC, "latest"])
    for name, tags in {"base": [FINAL, "latest"], "app": [FINAL, "1.4", "latest"]}.items():
        for tag in tags:
            assert registry.manifest_digest(f"{ns}/{name}", tag) == rc[name], (name, tag)
    # No blob moved and no push: reads, then one manifest PUT per new tag.
    assert not [h for h in hits if "/blobs/" in h.path]
    puts = sorted(h.path for h in hits if h.method == "PUT")
    assert puts == sorted(f"/v2/{ns}/{n}/manifests/{t}" for n, t in
                          [("base", FINAL), ("base", "latest"), ("app", FINAL), ("app", "1.4"), ("app", "latest")])
    # Floating tags last: after every immutable tag of every image.
    order = [h.path.rsplit("/", 1)[1] for h in hits if h.method == "PUT"]
    assert max(i for i, t in enumerate(order) if t == FINAL) < min(i for i, t in enumerate(order) if t != FINAL)
    assert {e.reference for e in events if isinstance(e, Verified)} == set(tags_of(result))
    assert {e.digest for e in events if isinstance(e, SourceResolved)} == set(rc.values())
    assert all(status == "pushed" and verified for status, _, verified in tags_of(result).values())
    assert again.ok and {s for s, _, _ in tags_of(again).values()} == {"unchanged"}


def test_missing_source_refuses_before_anything_moves(tmp_path: Path, registry: RegistryServer, imgctl,
                                                      docker_config: Path) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    config = images_config(tmp_path, [{"name": "hub", "url": registry.host, "namespace": ns}])
    release(imgctl, config, "--only", "base")
    events: list[Event] = []
    plan_from, plan_to = plans(config)
    with pytest.raises(SourceMissing) as caught:
        promote(plan_from, plan_to, events.append, environ=env_for(docker_config))
    assert caught.value.exit_code == 1
    assert f"app ({registry.host}/{ns}/app:{RC})" in caught.value.message
    assert "base" not in caught.value.message.split("no source image for", 1)[1]
    assert registry.tags(f"{ns}/base") == [RC] and registry.tags(f"{ns}/app") == []
    assert not [e for e in events if isinstance(e, (TagAdded, BlobCopied))]


# -- from one registry to others ---------------------------------------------------------------


def test_cross_registry_copies_whole_images_that_pull_and_run(tmp_path: Path, registry: RegistryServer,
                                                              token_registry, imgctl, docker_config: Path) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    staging = {"name": "staging", "url": registry.host, "namespace": ns}
    release(imgctl, images_config(tmp_path, [staging], name="staging.yaml"))
    with RegistryServer(tmp_path / "prod") as prod:
        config = images_config(tmp_path, [staging, {"name": "prod", "url": prod.host, "namespace": ns},
                                          {"name": "secure", "url": token_registry.host, "namespace": ns, **ENV_AUTH}])
        result, events = run_promote(config, env_for(docker_config), from_registry="staging")
        assert result.ok and result.floating == "pushed", result
        for name, tags in {"base": [FINAL, "latest"], "app": [FINAL, "1.4", "latest"]}.items():
            rc = registry.manifest_digest(f"{ns}/{name}", RC)
            assert sorted(registry.tags(f"{ns}/{name}")) == [RC]  # the source is left as it was
            for server in (prod, token_registry):
                assert sorted(server.tags(f"{ns}/{name}")) == sorted(tags)
                for tag in tags:
                    assert server.manifest_digest(f"{ns}/{name}", tag) == rc, (server.host, name, tag)
        copied = [e for e in events if isinstance(e, BlobCopied)]
        for server in (prod, token_registry):
            there = [e for e in copied if e.reference.startswith(server.host + "/")]
            assert {e.how for e in there} <= {"streamed", "mounted", "present"}
            # Each blob is streamed into the registry once: app's busybox layer (base's) is mounted
            # from whichever of the two repositories got it first (the images are copied at once).
            streamed = [e.digest for e in there if e.how == "streamed"]
            assert streamed and len(streamed) == len(set(streamed)) == len({e.digest for e in there})
        skopeo = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--creds", f"{AUTH_USER}:{AUTH_PASSWORD}",
                                 f"docker://{token_registry.host}/{ns}/app:latest"], capture_output=True, text=True)
        assert skopeo.returncode == 0, skopeo.stderr
        assert json.loads(skopeo.stdout)["Digest"] == registry.manifest_digest(f"{ns}/app", RC)
        ref = f"{prod.host}/{ns}/app:{FINAL}"
        try:
            subprocess.run(["docker", "pull", "-q", ref], check=True, capture_output=True, timeout=120)
            out = subprocess.run(["docker", "run", "--rm", ref], capture_output=True, text=True, check=True)
            assert out.stdout.strip() == f"hello {RC}"  # the rc's very image
        finally:
            subprocess.run(["docker", "rmi", "-f", ref], capture_output=True)


def test_blobs_are_mounted_within_one_registry(tmp_path: Path, registry: RegistryServer, imgctl,
                                               docker_config: Path) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    staging = {"name": "staging", "url": registry.host, "namespace": f"{ns}-staging"}
    release(imgctl, images_config(tmp_path, [staging], name="staging.yaml"))
    with FaultProxy(registry.host) as proxy:
        config = images_config(tmp_path, [{**staging, "url": proxy.host},
                                          {"name": "prod", "url": proxy.host, "namespace": f"{ns}-prod"}])
        result, events = run_promote(config, env_for(docker_config), from_registry="staging", to_registry=("prod",))
        hits = proxy.hits
    assert result.ok, result
    assert registry.manifest_digest(f"{ns}-prod/app", "latest") == registry.manifest_digest(f"{ns}-staging/app", RC)
    uploads = [h for h in hits if h.method == "POST" and "/blobs/uploads/" in h.path]
    assert uploads and {h.status for h in uploads} == {201}  # 201: mounted; a new upload would be 202
    assert not [h for h in hits if h.method == "GET" and "/blobs/" in h.path]  # nothing streamed
    assert {e.how for e in events if isinstance(e, BlobCopied)} <= {"mounted", "present"}
    assert "mounted" in {e.how for e in events if isinstance(e, BlobCopied)}


def test_a_failing_destination_holds_every_floating_tag(tmp_path: Path, registry: RegistryServer, imgctl,
                                                        docker_config: Path) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    staging = {"name": "staging", "url": registry.host, "namespace": ns}
    release(imgctl, images_config(tmp_path, [staging], name="staging.yaml"))
    with RegistryServer(tmp_path / "prod") as prod, FaultProxy(prod.host) as proxy:
        proxy.add_rule(Rule("PUT", rf"^/v2/{ns}/app/manifests/", "status", count=1000, status=400))
        config = images_config(tmp_path, [staging, {"name": "prod", "url": proxy.host, "namespace": ns}])
        result, events = run_promote(config, env_for(docker_config), from_registry="staging")
        why = [(i.name, i.status, i.error) for i in result.images]
        assert not result.ok and result.exit_code == 1, why
        assert result.floating.startswith("held back: 1 image failed"), (result.floating, why)
        status = {i.name: i.status for i in result.images}
        assert status == {"base": "released", "app": "failed"}, why
        assert prod.tags(f"{ns}/base") == [FINAL]  # its immutable tag moved; `latest` did not
        assert prod.tags(f"{ns}/app") == []
        held = [t for i in result.images for t in i.tags if t.floating]
        assert held and {t.status for t in held} == {"held"}
        assert any(e.type == "floating_held" for e in events)
        assert any(e.type == "image_failed" and e.image == "app" for e in events)


def _blob(registry: RegistryServer, repo: str, data: bytes) -> dict[str, Any]:
    return {"digest": registry.put_blob(repo, data), "size": len(data)}


def _oci_image(registry: RegistryServer, repo: str, arch: str, layer: bytes) -> dict[str, Any]:
    config = json.dumps({"architecture": arch, "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}})
    body = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **_blob(registry, repo, config.encode())},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **_blob(registry, repo, layer)}],
    }).encode()
    digest = registry.put_manifest(repo, "sha256:" + hashlib.sha256(body).hexdigest(), body,
                                   "application/vnd.oci.image.manifest.v1+json")
    return {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": len(body),
            "platform": {"architecture": arch, "os": "linux"}}


def _tar(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_an_index_is_copied_whole_children_first(tmp_path: Path, registry: RegistryServer, token_registry,
                                                 docker_config: Path) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    repo = f"{ns}/multi"
    children = [_oci_image(registry, repo, arch, _tar("etc/arch", arch.encode())) for arch in ("amd64", "arm64")]
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": children}).encode()
    index_digest = registry.put_manifest(repo, RC, index, "application/vnd.oci.image.index.v1+json")
    write_context(tmp_path / "multi", "FROM scratch\n")
    staging = {"name": "staging", "url": registry.host, "namespace": ns}
    with FaultProxy(token_registry.host) as proxy:
        config = tmp_path / "imgctl.yaml"
        config.write_text(yaml.safe_dump({
            "registries": [staging, {"name": "secure", "url": proxy.host, "namespace": ns, **ENV_AUTH}],
            "images": [{"name": "multi", "context": "multi", "tags": ["{version}", "latest"]}],
        }))
        result, _ = run_promote(config, env_for(docker_config), from_registry="staging")
        puts = [h.path.rsplit("/", 1)[1] for h in proxy.hits if h.method == "PUT" and "/manifests/" in h.path]
    assert result.ok, result
    assert token_registry.manifest_digest(repo, "latest") == index_digest
    assert token_registry.manifest_digest(repo, FINAL) == index_digest
    # every child (stored by digest) before the index; the index itself is stored by its
    # immutable tag's PUT (a PUT by digest first would be two requests more), the floating tag last
    assert puts == [children[0]["digest"], children[1]["digest"], FINAL, "latest"]
    for child in children:
        assert token_registry.manifest_digest(repo, child["digest"]) == child["digest"]
    assert {p.platform: p.digest for p in result.images[0].platforms} == {
        "linux/amd64": children[0]["digest"], "linux/arm64": children[1]["digest"]}
    raw = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--creds", f"{AUTH_USER}:{AUTH_PASSWORD}",
                          "--override-arch", "arm64", f"docker://{token_registry.host}/{repo}:{FINAL}"],
                         capture_output=True, text=True)
    assert raw.returncode == 0, raw.stderr
    assert json.loads(raw.stdout)["Architecture"] == "arm64"


def _single_image_source(registry: RegistryServer, ns: str, layer: bytes) -> dict[str, Any]:
    """`ns/one:RC` in `registry`: one OCI image of one layer."""
    child = _oci_image(registry, f"{ns}/one", "amd64", layer)
    body, media_type = registry.get_manifest(f"{ns}/one", child["digest"])
    registry.put_manifest(f"{ns}/one", RC, body, media_type)
    return child


@pytest.mark.parametrize("action, count", [("status", 1), ("status", 1000), ("reset", 1), ("reset", 1000)],
                         ids=["503-once", "503-always", "reset-once", "reset-always"])
def test_a_failed_source_read_cancels_the_upload_started_beside_it(tmp_path: Path, registry: RegistryServer,
                                                                   docker_config: Path, action: str, count: int) -> None:
    """The destination's upload is started while the source's GET is asked for: when the GET
    fails (an answer of 503, or a connection dropped before any answer), the upload started for
    it is cancelled (DELETE), and a retry starts a new one."""
    ns = unique()
    layer = _tar("etc/data", os.urandom(300_000))
    child = _single_image_source(registry, ns, layer)
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    write_context(tmp_path / "one", "FROM scratch\n")
    with RegistryServer(tmp_path / "prod") as prod, FaultProxy(registry.host) as source, \
            FaultProxy(prod.host) as destination:
        source.add_rule(Rule("GET", rf"^/v2/{ns}/one/blobs/{layer_digest}$", action, count=count, status=503))  # type: ignore[arg-type]
        config = tmp_path / "imgctl.yaml"
        config.write_text(yaml.safe_dump({
            "registries": [{"name": "staging", "url": source.host, "namespace": ns},
                           {"name": "prod", "url": destination.host, "namespace": ns}],
            "images": [{"name": "one", "context": "one", "tags": ["{version}"]}],
        }))
        result, _ = run_promote(config, env_for(docker_config), from_registry="staging")
        uploads = [h for h in destination.hits if "/blobs/uploads/" in h.path]
        failed_gets = [h for h in source.hits if h.method == "GET" and h.action == action]
        promoted, tags = prod.manifest_digest(f"{ns}/one", FINAL), prod.tags(f"{ns}/one")
    assert failed_gets, source.hits
    started = [h for h in uploads if h.method == "POST"]
    cancelled = [h for h in uploads if h.method == "DELETE"]
    stored = [h for h in uploads if h.method == "PUT"]
    # one upload for the config, one per GET of the layer that failed (each cancelled), one for the GET that did not
    assert len(started) == 1 + len(failed_gets) + (count == 1), uploads
    assert len(cancelled) == len(failed_gets) and {h.status for h in cancelled} == {204}, uploads
    if count == 1:
        assert result.ok, result
        assert len(stored) == 2
        assert promoted == child["digest"]
    else:
        assert not result.ok and result.images[0].status == "failed", result
        assert ("503" if action == "status" else "cannot reach") in (result.images[0].error or ""), result.images[0].error
        assert tags == []


MEMORY_SCRIPT = """
import json, resource, sys
from imgctl import api
from imgctl.plan import Options
from imgctl.promote import promote
from pathlib import Path
loaded = api.load(Path(sys.argv[1]))
plans = [api.plan(loaded, version=v, options=Options()) for v in (sys.argv[2], sys.argv[3])]
result = promote(*plans, lambda event: None, from_registry="staging")
# VmHWM: this process's own peak. getrusage's ru_maxrss would do, but Linux carries it over
# exec from the parent (pytest, itself past 100 MB after making the layer), so it measures that.
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"ok": result.ok, "peak_kb": hwm, "ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def test_a_100mb_layer_is_streamed_not_held_in_memory(tmp_path: Path, registry: RegistryServer,
                                                      docker_config: Path) -> None:
    ns = unique()
    repo = f"{ns}/big"
    layer = _tar("big", os.urandom(100 * 1024 * 1024))
    child = _oci_image(registry, repo, "amd64", layer)
    del layer
    body, media_type = registry.get_manifest(repo, child["digest"])
    registry.put_manifest(repo, RC, body, media_type)
    write_context(tmp_path / "big", "FROM scratch\n")
    with RegistryServer(tmp_path / "prod") as prod:
        config = tmp_path / "imgctl.yaml"
        config.write_text(yaml.safe_dump({
            "registries": [{"name": "staging", "url": registry.host, "namespace": ns},
                           {"name": "prod", "url": prod.host, "namespace": ns}],
            "images": [{"name": "big", "context": "big", "tags": ["{version}"]}],
        }))
        environ = {**os.environ, "DOCKER_CONFIG": str(docker_config)}
        done = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(config), RC, FINAL], capture_output=True,
                              text=True, env=environ, timeout=120)
        assert done.returncode == 0, done.stderr
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        assert measured["ok"]
        assert prod.manifest_digest(repo, FINAL) == child["digest"]
    # The process holds imgctl and requests (~40 MB here); a copy held whole would add 100 MB.
    assert measured["peak_kb"] < 80 * 1024, measured


def test_the_promote_command(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    """`imgctl promote` as a user runs it: a dry run, the promotion with its report, a missing source."""
    config = images_config(tmp_path, [{"name": "main", "url": registry.host, "namespace": unique()}])
    release(imgctl, config)
    ns = yaml.safe_load(config.read_text())["registries"][0]["namespace"]
    rc = {name: registry.manifest_digest(f"{ns}/{name}", RC) for name in ("base", "app")}

    dry = imgctl("promote", "-c", str(config), "--from", RC, "--version", FINAL, "--dry-run")
    assert dry.code == 0, dry.output
    assert f"{registry.host}/{ns}/app:1.4" in dry.stdout and registry.tags(f"{ns}/app") == [RC]

    run = imgctl("promote", "-c", str(config), "--from", RC, "--version", FINAL, "--output", "json",
                 "--report", str(tmp_path / "report.json"))
    assert run.code == 0, run.output
    for name, tags in (("base", [FINAL, "latest"]), ("app", [FINAL, "1.4", "latest"])):
        for tag in tags:
            assert registry.manifest_digest(f"{ns}/{name}", tag) == rc[name], (name, tag)
    assert {e["reference"] for e in run.of_type("source_resolved")} == {f"{registry.host}/{ns}/{n}:{RC}" for n in rc}
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["promoted_from"] == RC and report["exit_code"] == 0
    assert {e["action"] for e in run.of_type("image_started")} == {"promote"}

    plain = imgctl("promote", "-c", str(config), "--from", RC, "--version", FINAL, "--output", "plain")
    assert plain.code == 0, plain.output
    assert "app | promoting" in plain.stderr and "building" not in plain.output, plain.stderr
    # nothing is built, so no log folder is left behind unless one is asked for (the release made one)
    assert len(list(tmp_path.glob("imgctl-logs-*"))) == 1, list(tmp_path.iterdir())
    logged = imgctl("promote", "-c", str(config), "--from", RC, "--version", FINAL, "--log-dir", str(tmp_path / "logs"))
    assert logged.code == 0, logged.output
    assert "promoting" in (tmp_path / "logs" / "app.log").read_text()

    missing = imgctl("promote", "-c", str(config), "--from", "9.9.9", "--version", "9.9.10")
    assert missing.code == 1, missing.output
    assert "no source image for base" in missing.stderr and "nothing was moved" in missing.stderr
    assert "Traceback" not in missing.output
