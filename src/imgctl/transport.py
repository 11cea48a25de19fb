"""How imgctl's own registry requests travel: which scheme, which CAs, which proxy.

The same rules as the Docker daemon, so that a registry the daemon pushes to is one imgctl can
verify: loopback and registries the daemon lists as insecure speak plain HTTP; HTTPS trusts the
system store, /etc/docker/certs.d/<host>/*.crt and $SSL_CERT_FILE, and sends the client
certificate found there; HTTP(S)_PROXY and NO_PROXY apply, except that loopback never goes
through a proxy (as in Go's net/http, which the daemon uses).

Only the standard library is imported here at start-up; requests and truststore come with the
first session (`imgctl validate` never makes one).
"""

from __future__ import annotations

import functools
import ipaddress
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from imgctl.errors import RegistryError
from imgctl.refs import is_docker_hub

if TYPE_CHECKING:
    import ssl

    import requests

CERTS_D = Path("/etc/docker/certs.d")
POOL_SIZE = 16  # connections kept per registry: run.py lets as many images use it at once


def _hostname(host: str) -> str:
    """`host` without its port: "h:5000" -> "h", "[::1]:5000" -> "::1", "::1" -> "::1"."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    name = _hostname(host)
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return name.lower() == "localhost"


def _listed(host: str, insecure: Iterable[str]) -> bool:
    """Whether `host` is named in `insecure` (exactly, port included, as the daemon's
    IndexConfigs key it), or is an IP address inside one of its CIDRs.

    Names are not resolved to test them against CIDRs (the daemon does): imgctl has one scheme per
    host and no fallback, so a TLS registry whose name resolves into 127.0.0.0/8 stays HTTPS.
    """
    entries = set(insecure)
    if host in entries:
        return True
    try:
        address = ipaddress.ip_address(_hostname(host))
    except ValueError:
        return False
    return any(address in network for network in map(_network, entries) if network is not None)


def _network(entry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(entry, strict=False) if "/" in entry else None
    except ValueError:
        return None


def base_url(host: str, *, insecure: Iterable[str] = ()) -> str:
    if is_docker_hub(host):
        return "https://registry-1.docker.io"
    plain = is_loopback(host) or _listed(host, insecure)
    return f"{'http' if plain else 'https'}://{host}"


def insecure_registries(info: dict[str, Any]) -> frozenset[str]:
    """The registries (host[:port]) and CIDRs the daemon marks insecure, from `APIClient.info()`.

    Feed the result to base_url(insecure=...): it matches names exactly and IP addresses by CIDR.
    """
    config = info.get("RegistryConfig") or {}
    found = {
        str(index.get("Name") or name)
        for name, index in (config.get("IndexConfigs") or {}).items()
        if isinstance(index, dict) and index.get("Secure") is False
    }
    found.update(str(cidr) for cidr in config.get("InsecureRegistryCIDRs") or ())
    return frozenset(found)


def proxies_for(url: str) -> dict[str, str]:
    """The proxy for `url` from the environment, as Go's httpproxy.FromEnvironment picks it:
    upper case first, HTTPS_PROXY for https, HTTP_PROXY for http, NO_PROXY honoured, and never
    one for loopback. ALL_PROXY is ignored, as the daemon ignores it."""
    parts = urlsplit(url)
    if is_loopback(parts.netloc):
        return {}
    proxy = _env(f"{parts.scheme.upper()}_PROXY")
    if not proxy:
        return {}
    from requests.utils import should_bypass_proxies

    if should_bypass_proxies(url, no_proxy=_env("NO_PROXY")):
        return {}
    return {parts.scheme: proxy}


def _env(name: str) -> str | None:
    return os.environ.get(name) or os.environ.get(name.lower()) or None


def new_session(host: str) -> requests.Session:
    """A Session for registry `host`: its trust, its client certificate, the environment's proxy."""
    import requests

    session = requests.Session()
    # Proxies are picked per URL by the adapter (a token realm or a blob redirect may be another
    # host). trust_env would also let ~/.netrc replace the Authorization header imgctl sets, and
    # REQUESTS_CA_BUNDLE replace the trust below.
    session.trust_env = False
    adapter = _adapter_class()(functools.partial(_ssl_context, host), pool_maxsize=POOL_SIZE)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _ssl_context(host: str) -> ssl.SSLContext:
    import ssl

    import certifi
    import truststore

    context = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # certifi stays, so that a machine without a system store (a slim container) works as before.
    extra = [Path(certifi.where())]
    if os.environ.get("SSL_CERT_FILE"):
        extra.append(Path(os.environ["SSL_CERT_FILE"]))
    folder = CERTS_D / host
    if not is_docker_hub(host) and folder.is_dir():  # the daemon reads no certs.d for Docker Hub
        extra += sorted(folder.glob("*.crt"))
        pairs = [(cert, cert.with_suffix(".key")) for cert in sorted(folder.glob("*.cert"))]
        for cert, key in pairs:
            if not key.is_file():
                raise RegistryError(
                    f"missing key {key} for client certificate {cert} (CA certificates must end in .crt)"
                )
        if pairs:  # the daemon offers every pair; one SSLContext holds one, so the first by name
            _load(context.load_cert_chain, *pairs[0])
    for path in extra:
        _load(context.load_verify_locations, path)
    return context


def _load(method: Any, *paths: Path) -> None:
    try:
        method(*map(str, paths))
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise RegistryError(f"cannot use {', '.join(map(str, paths))}: {exc}") from None


def _untrusted(url: str, exc: BaseException) -> RegistryError | None:
    """An imgctl error for a certificate that failed verification; None for other TLS faults."""
    import ssl

    cause: BaseException | None = exc  # requests' SSLError <- urllib3's MaxRetryError <- its SSLError <- ssl's
    while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return None
    host = urlsplit(url).netloc
    error = RegistryError(
        f"the TLS certificate of registry {host} is not trusted ({cause.verify_message}): "
        f"put its CA certificate in {CERTS_D / host / 'ca.crt'} or the system trust store"
    )
    error.hint = f"imgctl trusts the system store, {CERTS_D}/<host:port>/*.crt and $SSL_CERT_FILE, as the Docker daemon does."
    return error


@functools.cache
def _adapter_class() -> type[Any]:
    """The HTTPAdapter subclass, made on first use so that importing this module imports no requests."""
    import requests
    from requests.adapters import HTTPAdapter

    class RegistryAdapter(HTTPAdapter):
        # The TLS context is made on the first HTTPS request, not with the adapter: loading the
        # system store and certifi costs 0.1-0.3 s, and a loopback or insecure registry never uses it.
        def __init__(self, make_context: Callable[[], ssl.SSLContext], **kwargs: Any) -> None:
            self._make_context = make_context
            self._context: ssl.SSLContext | None = None
            super().__init__(**kwargs)

        def _tls(self) -> ssl.SSLContext:
            if self._context is None:
                self._context = self._make_context()
                # Pools made from now on take it; none for HTTPS exists before the first HTTPS request.
                self.poolmanager.connection_pool_kw["ssl_context"] = self._context
            return self._context

        def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
            kwargs["ssl_context"] = self._tls()  # the registry's TLS inside the proxy's tunnel
            return super().proxy_manager_for(proxy, **kwargs)

        def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
            # Trust is the context's; requests would load certifi's file into it on every new connection.
            conn.cert_reqs = "CERT_REQUIRED"
            conn.ca_certs = conn.ca_cert_dir = None

        def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
            kwargs["proxies"] = proxies_for(request.url or "")
            if (request.url or "").startswith("https:"):
                self._tls()
            try:
                return super().send(request, *args, **kwargs)
            except requests.exceptions.SSLError as exc:
                raise _untrusted(request.url or "", exc) or exc from None

    return RegistryAdapter
