"""Tests of the test-support registry launcher and fault-injecting proxy, against a real
docker-registry and (for the push tests) the real Docker daemon."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

try:
    from tests.support.faultproxy import FaultProxy, Rule
    from tests.support.registry import RegistryServer
except ImportError:  # bare `pytest` puts tests/ (not the repo root) on sys.path
    from support.faultproxy import FaultProxy, Rule  # type: ignore[no-redef]
    from support.registry import RegistryServer  # type: ignore[no-redef]

# Every test here runs a real docker-registry; the push tests also need dockerd.
pytestmark = pytest.mark.engine


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryServer]:
    with RegistryServer(tmp_path / "registry") as reg:
        yield reg


@pytest.fixture
def proxy(registry: RegistryServer) -> Iterator[FaultProxy]:
    with FaultProxy(registry.host) as p:
        yield p


@pytest.fixture
def http() -> Iterator[requests.Session]:
    s = requests.Session()
    s.trust_env = False
    yield s
    s.close()


# -- RegistryServer ---------------------------------------------------------------------------


def test_registry_answers_v2(registry: RegistryServer, http: requests.Session) -> None:
    assert http.get(f"http://{registry.host}/v2/", timeout=5).status_code == 200
    assert registry.tags("no/such") == []
    assert registry.manifest_digest("no/such", "latest") is None
    assert (Path(registry.workdir) / "config.yml").is_file()


def test_registry_htpasswd(tmp_path: Path, http: requests.Session) -> None:
    with RegistryServer(tmp_path, htpasswd=("alice", "s3cret")) as reg:
        url = f"http://{reg.host}/v2/"
        assert http.get(url, timeout=5).status_code == 401
        assert http.get(url, auth=("alice", "wrong"), timeout=5).status_code == 401
        assert http.get(url, auth=("alice", "s3cret"), timeout=5).status_code == 200
        assert reg.tags("no/such") == []  # the helper authenticates itself
    reg.stop()  # idempotent
    with pytest.raises(requests.ConnectionError):
        http.get(url, timeout=2)


# -- FaultProxy -------------------------------------------------------------------------------


def test_status_rule_fires_count_times(proxy: FaultProxy, http: requests.Session) -> None:
    rule = proxy.add_rule(Rule("GET", r"^/v2/$", "status", count=2, status=503))
    url = f"http://{proxy.host}/v2/"
    codes = [http.get(url, timeout=5).status_code for _ in range(4)]
    assert codes == [503, 503, 200, 200]
    assert proxy.fired(rule) == 2
    assert [(h.status, h.action) for h in proxy.hits] == [
        (503, "status"),
        (503, "status"),
        (200, None),
        (200, None),
    ]
    # A rule for another method does not match.
    head_rule = proxy.add_rule(Rule("HEAD", r"^/v2/$", "status", status=500))
    assert http.get(url, timeout=5).status_code == 200
    assert proxy.fired(head_rule) == 0


def test_429_carries_retry_after(proxy: FaultProxy, http: requests.Session) -> None:
    rule = proxy.add_rule(Rule(None, r"/v2/", "status", status=429, retry_after=7))
    r = http.get(f"http://{proxy.host}/v2/", timeout=5)
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "7"
    assert r.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert http.get(f"http://{proxy.host}/v2/", timeout=5).status_code == 200
    assert proxy.fired(rule) == 1


def test_status_rule_drains_body_and_keeps_connection(
    proxy: FaultProxy, http: requests.Session
) -> None:
    rule = proxy.add_rule(Rule("POST", r"/blobs/uploads/", "status", status=503))
    url = f"http://{proxy.host}/v2/t/x/blobs/uploads/"
    assert http.post(url, data=b"x" * 300_000, timeout=5).status_code == 503
    r = http.post(url, timeout=5)
    assert r.status_code == 202
    assert proxy.fired(rule) == 1


@pytest.mark.parametrize("after_bytes", [0, 100_000])
def test_reset_is_connection_error(
    proxy: FaultProxy, http: requests.Session, after_bytes: int
) -> None:
    rule = proxy.add_rule(Rule(None, r"/blobs/uploads/", "reset", after_bytes=after_bytes))
    url = f"http://{proxy.host}/v2/t/x/blobs/uploads/"
    with pytest.raises(requests.ConnectionError):
        http.post(url, data=b"y" * 1_000_000, timeout=5)
    assert http.post(url, timeout=5).status_code == 202
    assert proxy.fired(rule) == 1
    assert [(h.status, h.action) for h in proxy.hits] == [(None, "reset"), (202, None)]


def test_stall_delays_answer(proxy: FaultProxy, http: requests.Session) -> None:
    rule = proxy.add_rule(Rule("GET", r"^/v2/$", "stall", stall_seconds=1.0))
    t0 = time.monotonic()
    assert http.get(f"http://{proxy.host}/v2/", timeout=10).status_code == 200
    assert time.monotonic() - t0 >= 0.9
    assert proxy.fired(rule) == 1
    assert proxy.hits[0].action == "stall"


def test_stop_ends_stalled_request(registry: RegistryServer, http: requests.Session) -> None:
    p = FaultProxy(registry.host, [Rule(None, r"/v2/", "stall", stall_seconds=60)]).start()
    t0 = time.monotonic()
    threading.Timer(0.3, p.stop).start()
    with pytest.raises(requests.ConnectionError):
        http.get(f"http://{p.host}/v2/", timeout=10)
    assert time.monotonic() - t0 < 5


def test_streams_blob_upload_and_download(
    registry: RegistryServer, proxy: FaultProxy, http: requests.Session
) -> None:
    """Chunked PATCH and Content-Length PUT through the proxy, then stream the blob back."""
    data = os.urandom(3 * 1024 * 1024 + 17)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    base = f"http://{proxy.host}"
    r = http.post(f"{base}/v2/t/blob/blobs/uploads/", timeout=5)
    assert r.status_code == 202
    location = r.headers["Location"]
    assert location.startswith(base)  # Host header kept: the upload stays on the proxy

    def gen() -> Iterator[bytes]:
        for i in range(0, 2 * 1024 * 1024, 100_000):
            yield data[i : min(i + 100_000, 2 * 1024 * 1024)]

    r = http.patch(location, data=gen(), timeout=10)  # generator: Transfer-Encoding chunked
    assert r.status_code == 202, r.text
    location = r.headers["Location"]
    rest = data[2 * 1024 * 1024 :]
    r = http.put(location, params={"digest": digest}, data=rest, timeout=10)
    assert r.status_code == 201, r.text

    with http.get(f"{base}/v2/t/blob/blobs/{digest}", stream=True, timeout=10) as r:
        assert r.status_code == 200
        assert b"".join(r.iter_content(65536)) == data
    r = http.head(f"{base}/v2/t/blob/blobs/{digest}", timeout=5)
    assert int(r.headers["Content-Length"]) == len(data)
    assert [h.method for h in proxy.hits] == ["POST", "PATCH", "PUT", "GET", "HEAD"]


# -- pushes with the real daemon --------------------------------------------------------------


def _docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}  # the engine only has the classic builder
    proc = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=120, env=env
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def busybox_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("docker") is None or _docker("info", check=False).returncode != 0:
        pytest.skip("no Docker daemon")
    ctx = tmp_path_factory.mktemp("ctx")
    shutil.copy("/bin/busybox", ctx / "busybox")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY busybox /bin/busybox\n")
    name = f"imgctl-faultproxy-test:{uuid.uuid4().hex[:12]}"
    _docker("build", "-q", "-t", name, str(ctx))
    yield name
    _docker("rmi", "-f", name, check=False)


@pytest.fixture
def pushed_tags() -> Iterator[list[str]]:
    tags: list[str] = []
    yield tags
    if tags:
        _docker("rmi", *tags, check=False)


def _pushed_digest(output: str) -> str:
    m = re.search(r"digest: (sha256:[0-9a-f]{64})", output)
    assert m, output
    return m.group(1)


def test_docker_push_through_proxy(
    registry: RegistryServer, proxy: FaultProxy, busybox_image: str, pushed_tags: list[str]
) -> None:
    ref = f"{proxy.host}/t/x:1"
    _docker("tag", busybox_image, ref)
    pushed_tags.append(ref)
    out = _docker("push", ref).stdout
    assert registry.tags("t/x") == ["1"]
    assert registry.manifest_digest("t/x", "1") == _pushed_digest(out)
    assert any(h.method == "PUT" and "/manifests/" in h.path for h in proxy.hits)


def test_docker_push_fails_on_manifest_503_then_succeeds(
    registry: RegistryServer, proxy: FaultProxy, busybox_image: str, pushed_tags: list[str]
) -> None:
    rule = proxy.add_rule(Rule("PUT", r"/manifests/", "status", status=503))
    ref = f"{proxy.host}/t/x:1"
    _docker("tag", busybox_image, ref)
    pushed_tags.append(ref)
    first = _docker("push", ref, check=False)
    assert first.returncode != 0
    assert "503" in first.stdout + first.stderr
    assert registry.manifest_digest("t/x", "1") is None
    assert proxy.fired(rule) == 1

    out = _docker("push", ref).stdout
    assert "already exists" in out  # the layer went up during the failed push
    assert registry.manifest_digest("t/x", "1") == _pushed_digest(out)
