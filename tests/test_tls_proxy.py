"""TLS and proxies for imgctl's own registry requests, against a real docker-registry serving TLS
with a certificate from a CA made here, and a real forward proxy (tinyproxy).

The registry listens on 127.0.0.1 but is reached as `reg-<hex>.imgctl.test:<port>`, a name this
file adds to /etc/hosts: imgctl speaks plain HTTP to loopback and never sends it through a proxy.
The daemon treats a name that resolves into 127.0.0.0/8 as an insecure registry (it skips
verification and reads no certs.d for it), so its pushes work whatever we install; what these
tests check is imgctl's own trust. Every CA, certs.d folder and hosts line is removed afterwards.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from imgctl.errors import RegistryError
from imgctl.transport import new_session
from tests.conftest import unique, write_base_context, write_config
from tests.support.registry import RegistryServer, free_port
from tests.support.tls import CA, TLSRegistryServer, certs_d, hosts_entry, make_ca, registry_hostname, system_ca

pytestmark = pytest.mark.engine

NO_PROXY_ENV = {name: "" for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")}


@pytest.fixture(autouse=True)
def clean_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NO_PROXY_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)


@pytest.fixture
def ca(tmp_path: Path) -> CA:
    return make_ca(tmp_path / "ca")


@pytest.fixture
def tls_registry(tmp_path: Path, engine: None, ca: CA) -> Iterator[TLSRegistryServer]:
    name = registry_hostname()
    with hosts_entry(name), TLSRegistryServer(tmp_path / "registry", name=name, ca=ca, server=ca.issue(tmp_path / "server", name)) as server:
        yield server
        _remove_images(server.host)


@dataclass
class TinyProxy:
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[str]:
        """What each request tinyproxy logged asked for: "CONNECT host:port", "GET http://..."."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        lines = [line.split("): ", 1)[1] for line in text.splitlines() if "Request (file descriptor" in line]
        return [line.rsplit(" HTTP/", 1)[0] for line in lines]


@pytest.fixture
def tinyproxy(tmp_path: Path, tls_registry: TLSRegistryServer) -> Iterator[TinyProxy]:
    """tinyproxy on 127.0.0.1, taking clients from 127.0.0.1 only, tunnelling only to the registry's port."""
    folder = tmp_path / "tinyproxy"
    folder.mkdir()
    proxy = TinyProxy(free_port(), folder / "tinyproxy.log")
    config = folder / "tinyproxy.conf"
    config.write_text(
        f"Port {proxy.port}\nListen 127.0.0.1\nAllow 127.0.0.1\nTimeout 60\nMaxClients 32\n"
        f'LogFile "{proxy.log}"\nLogLevel Connect\nDisableViaHeader Yes\n'
        f"ConnectPort {tls_registry.port}\n"
    )
    process = subprocess.Popen(["tinyproxy", "-d", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:  # a bare connection: a request would show in the log the tests read
                socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"tinyproxy did not start:\n{proxy.log.read_text() if proxy.log.exists() else ''}") from None
                time.sleep(0.05)
        yield proxy
    finally:
        process.terminate()
        process.wait(timeout=10)


def _remove_images(host: str) -> None:
    listed = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True).stdout.split()
    mine = [ref for ref in listed if ref.startswith(host + "/")]
    if mine:
        subprocess.run(["docker", "rmi", "-f", *mine], capture_output=True)


def _release(tmp_path: Path, imgctl, host: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    ns = unique()
    write_base_context(tmp_path / "base")
    config = write_config(tmp_path, {"registry": host, "namespace": ns,
                                     "images": [{"name": "base", "context": "base", "tags": ["{version}", "latest"]}]})
    run = imgctl("release", "-c", str(config), "--version", "1.0.0", "--output", "plain", env={**NO_PROXY_ENV, **(env or {})})
    return run, f"{ns}/base"


def _v2(registry: RegistryServer | TLSRegistryServer) -> int:
    scheme = "https" if isinstance(registry, TLSRegistryServer) else "http"
    return new_session(registry.host).get(f"{scheme}://{registry.host}/v2/", timeout=10).status_code


def _assert_released(run, registry: TLSRegistryServer | RegistryServer, repo: str) -> None:  # type: ignore[no-untyped-def]
    assert run.code == 0, run.output
    assert "Traceback" not in run.output
    assert sorted(registry.tags(repo)) == ["1.0.0", "latest"]


# -- trust -------------------------------------------------------------------------------------


def test_untrusted_certificate_fails_with_the_host_named(tmp_path: Path, tls_registry: TLSRegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RegistryError, match=rf"registry {tls_registry.host} is not trusted \(unable to get local issuer certificate\)"):
        _v2(tls_registry)
    run, repo = _release(tmp_path, imgctl, tls_registry.host)
    assert run.code == 1, run.output
    assert "Traceback" not in run.output
    assert f"TLS certificate of registry {tls_registry.host} is not trusted" in run.output
    assert f"/etc/docker/certs.d/{tls_registry.host}/ca.crt" in run.output
    assert tls_registry.tags(repo) == []  # it failed before the push: nothing unverifiable was released


def test_system_store(tmp_path: Path, tls_registry: TLSRegistryServer, ca: CA, imgctl) -> None:  # type: ignore[no-untyped-def]
    with system_ca(ca):
        assert _v2(tls_registry) == 200
        run, repo = _release(tmp_path, imgctl, tls_registry.host)
        _assert_released(run, tls_registry, repo)
    with pytest.raises(RegistryError, match="not trusted"):  # and it is gone again
        _v2(tls_registry)


def test_certs_d(tmp_path: Path, tls_registry: TLSRegistryServer, ca: CA, imgctl) -> None:  # type: ignore[no-untyped-def]
    with certs_d(tls_registry.host, ca):
        assert _v2(tls_registry) == 200
        run, repo = _release(tmp_path, imgctl, tls_registry.host)
        _assert_released(run, tls_registry, repo)


def test_ssl_cert_file(tmp_path: Path, tls_registry: TLSRegistryServer, ca: CA, imgctl, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.cert))
    assert _v2(tls_registry) == 200
    run, repo = _release(tmp_path, imgctl, tls_registry.host, env={"SSL_CERT_FILE": str(ca.cert)})
    _assert_released(run, tls_registry, repo)


def test_certificate_for_another_name_is_refused(tmp_path: Path, engine: None, ca: CA) -> None:
    name = registry_hostname()
    wrong = ca.issue(tmp_path / "server", "someone-else.imgctl.test")
    with hosts_entry(name), TLSRegistryServer(tmp_path / "registry", name=name, ca=ca, server=wrong) as server, certs_d(server.host, ca):
        with pytest.raises(RegistryError, match=rf"registry {server.host} is not trusted \(Hostname mismatch"):
            _v2(server)


def test_client_certificate_from_certs_d(tmp_path: Path, engine: None, ca: CA) -> None:
    name = registry_hostname()
    client_ca = make_ca(tmp_path / "client-ca", "imgctl test client CA")
    server_pair = ca.issue(tmp_path / "server", name)
    with hosts_entry(name), TLSRegistryServer(tmp_path / "registry", name=name, ca=ca, server=server_pair, client_ca=client_ca) as server:
        with certs_d(server.host, ca):
            with pytest.raises(requests.exceptions.SSLError):  # the registry demands a client certificate
                _v2(server)
        with certs_d(server.host, ca, client=client_ca.issue(tmp_path / "client", "imgctl-client", client=True)):
            assert _v2(server) == 200


# -- proxies -----------------------------------------------------------------------------------


def test_release_through_a_proxy(tmp_path: Path, tls_registry: TLSRegistryServer, ca: CA, tinyproxy: TinyProxy, imgctl) -> None:  # type: ignore[no-untyped-def]
    tunnel = f"CONNECT {tls_registry.host}"
    with certs_d(tls_registry.host, ca):
        run, repo = _release(tmp_path, imgctl, tls_registry.host, env={"HTTPS_PROXY": tinyproxy.url})
        _assert_released(run, tls_registry, repo)
    assert tunnel in tinyproxy.requests(), tinyproxy.log.read_text()
    assert set(tinyproxy.requests()) == {tunnel}  # nothing else went through it


def test_session_uses_lower_case_proxy_and_honours_no_proxy(tls_registry: TLSRegistryServer, ca: CA, tinyproxy: TinyProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    with certs_d(tls_registry.host, ca):
        monkeypatch.setenv("https_proxy", tinyproxy.url)
        assert _v2(tls_registry) == 200
        assert tinyproxy.requests() == [f"CONNECT {tls_registry.host}"]
        monkeypatch.setenv("no_proxy", tls_registry.host.split(":")[0])
        assert _v2(tls_registry) == 200
        assert len(tinyproxy.requests()) == 1  # the second request went straight to the registry


def test_loopback_bypasses_the_proxy(tmp_path: Path, registry: RegistryServer, tinyproxy: TinyProxy, imgctl, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    proxies = {"HTTP_PROXY": tinyproxy.url, "HTTPS_PROXY": tinyproxy.url}
    for name, value in proxies.items():
        monkeypatch.setenv(name, value)
    assert _v2(registry) == 200
    run, repo = _release(tmp_path, imgctl, registry.host, env=proxies)
    _assert_released(run, registry, repo)
    assert tinyproxy.requests() == []
