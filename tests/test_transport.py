"""transport: the scheme, the proxy and the certs.d files for a registry, with no network but a closed loopback port."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests

from imgctl import transport
from imgctl.errors import RegistryError
from imgctl.transport import base_url, insecure_registries, new_session, proxies_for

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")

# What dockerd 20.10 answers here (`docker info`), plus one registry listed with --insecure-registry.
INFO = {
    "RegistryConfig": {
        "IndexConfigs": {
            "docker.io": {"Mirrors": [], "Name": "docker.io", "Official": True, "Secure": True},
            "reg.corp:5000": {"Mirrors": [], "Name": "reg.corp:5000", "Official": False, "Secure": False},
        },
        "InsecureRegistryCIDRs": ["127.0.0.0/8", "10.20.0.0/16"],
        "Mirrors": [],
    }
}


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.mark.parametrize(
    "host", ["127.0.0.1:5000", "127.0.0.1", "127.3.2.1:443", "localhost:5000", "LOCALHOST", "[::1]:5000", "::1"]
)
def test_loopback_is_plain_http(host: str) -> None:
    assert base_url(host) == f"http://{host}"


@pytest.mark.parametrize("host", ["docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"])
def test_docker_hub_aliases_are_one_https_endpoint(host: str) -> None:
    assert base_url(host, insecure=[host]) == "https://registry-1.docker.io"


@pytest.mark.parametrize("host", ["ghcr.io", "reg.corp:5443", "10.0.0.5:5000", "localhost.example.com", "[2001:db8::1]:5000"])
def test_everything_else_is_https(host: str) -> None:
    assert base_url(host) == f"https://{host}"


def test_registries_the_daemon_lists_as_insecure_are_plain_http() -> None:
    insecure = insecure_registries(INFO)
    assert insecure == frozenset({"reg.corp:5000", "127.0.0.0/8", "10.20.0.0/16"})
    assert base_url("reg.corp:5000", insecure=insecure) == "http://reg.corp:5000"
    assert base_url("10.20.3.4:5000", insecure=insecure) == "http://10.20.3.4:5000"
    # another port of that host is another registry to the daemon; and names are not resolved
    assert base_url("reg.corp:5001", insecure=insecure) == "https://reg.corp:5001"
    assert base_url("10.21.0.1:5000", insecure=insecure) == "https://10.21.0.1:5000"
    assert base_url("reg-in-cidr.corp", insecure=insecure) == "https://reg-in-cidr.corp"
    # a name listed without a port is that name on the default port only, as IndexConfigs keys it
    assert base_url("reg.corp", insecure=["reg.corp"]) == "http://reg.corp"
    assert base_url("reg.corp:5000", insecure=iter(["reg.corp"])) == "https://reg.corp:5000"
    assert base_url("[fd00::5]:5000", insecure=["fd00::/8", "not-a-cidr/x"]) == "http://[fd00::5]:5000"


def test_insecure_registries_of_an_info_without_registry_config() -> None:
    assert insecure_registries({}) == frozenset()
    assert insecure_registries({"RegistryConfig": {"IndexConfigs": None, "InsecureRegistryCIDRs": None}}) == frozenset()


def test_proxy_per_scheme_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("http_proxy", "http://plain.corp:3128")
    assert proxies_for("https://ghcr.io/v2/") == {"https": "http://proxy.corp:3128"}
    assert proxies_for("http://reg.corp:5000/v2/") == {"http": "http://plain.corp:3128"}


def test_upper_case_wins_as_in_go(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://upper:1")
    monkeypatch.setenv("https_proxy", "http://lower:1")
    assert proxies_for("https://ghcr.io/v2/") == {"https": "http://upper:1"}


def test_all_proxy_is_ignored_as_the_daemon_ignores_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALL_PROXY", "http://all:1")
    assert proxies_for("https://ghcr.io/v2/") == {}


@pytest.mark.parametrize(
    "no_proxy", ["reg.corp", ".corp", "corp", "reg.corp:5443", "other.io, reg.corp", "*", "10.0.0.0/8"]
)
def test_no_proxy(monkeypatch: pytest.MonkeyPatch, no_proxy: str) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("no_proxy", no_proxy)
    host = "10.1.2.3:5443" if "/" in no_proxy else "reg.corp:5443"
    assert proxies_for(f"https://{host}/v2/") == {}
    assert proxies_for("https://ghcr.io/v2/") == ({} if no_proxy == "*" else {"https": "http://proxy.corp:3128"})


@pytest.mark.parametrize("host", ["127.0.0.1:5000", "localhost:5000", "[::1]:5000", "127.9.9.9"])
def test_loopback_never_goes_through_a_proxy(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    assert proxies_for(f"http://{host}/v2/") == {}
    assert proxies_for(f"https://{host}/v2/") == {}


def test_session_pool_and_no_environment_trust() -> None:
    session = new_session("reg.corp:5443")
    adapter = session.get_adapter("https://reg.corp:5443/v2/")
    assert adapter is session.get_adapter("http://reg.corp:5443/v2/")
    assert adapter.poolmanager.connection_pool_kw["maxsize"] == transport.POOL_SIZE  # type: ignore[attr-defined]
    assert session.trust_env is False  # ~/.netrc must never replace the Authorization header imgctl sets


def _first_https_request(host: str) -> None:
    # The trust is loaded on a session's first HTTPS request, before any connection: the error
    # comes before 127.0.0.1:9 (nothing listens) could refuse it.
    new_session(host).get("https://127.0.0.1:9/v2/", timeout=2)


def test_trust_is_loaded_on_the_first_https_request_only(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded: list[str] = []
    real = transport._ssl_context
    monkeypatch.setattr(transport, "_ssl_context", lambda host: loaded.append(host) or real(host))
    session = new_session("reg.corp:5443")
    with pytest.raises(requests.ConnectionError):
        session.get("http://127.0.0.1:9/v2/", timeout=2)
    assert loaded == []  # a plain-HTTP registry never pays for the system store
    for _ in range(2):
        with pytest.raises(requests.ConnectionError):
            session.get("https://127.0.0.1:9/v2/", timeout=2)
    assert loaded == ["reg.corp:5443"]  # once per session


def test_a_certificate_without_its_key_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "CERTS_D", tmp_path)
    (tmp_path / "reg.corp:5443").mkdir()
    (tmp_path / "reg.corp:5443" / "client.cert").write_text("not used")
    with pytest.raises(RegistryError, match=r"missing key .*client\.key for client certificate .*client\.cert"):
        _first_https_request("reg.corp:5443")


def test_an_unreadable_ca_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "CERTS_D", tmp_path)
    (tmp_path / "reg.corp:5443").mkdir()
    (tmp_path / "reg.corp:5443" / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
    with pytest.raises(RegistryError, match=r"cannot use .*reg\.corp:5443/ca\.crt"):
        _first_https_request("reg.corp:5443")


def test_a_missing_ssl_cert_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "absent.pem"))
    with pytest.raises(RegistryError, match="absent.pem"):
        _first_https_request("reg.corp:5443")


def test_importing_transport_imports_neither_requests_nor_truststore() -> None:
    code = "import sys, imgctl.transport; print(sorted(m for m in ('requests', 'truststore', 'ssl') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
