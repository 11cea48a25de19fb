"""TLS for tests: a CA made per test, docker-registry serving its certificate, and the places
users install a CA (system store, /etc/docker/certs.d), each undone on the way out.

Also a /etc/hosts entry, so that a registry on 127.0.0.1 can have a name that does not look
like loopback (imgctl sends loopback over plain HTTP and never through a proxy).
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.registry import RegistryServer

HOSTS = Path("/etc/hosts")
SYSTEM_CAS = Path("/usr/local/share/ca-certificates")
CERTS_D = Path("/etc/docker/certs.d")
_hosts_lock = threading.Lock()


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class CA:
    cert: Path
    key: Path

    def issue(self, folder: Path, name: str, *, client: bool = False) -> Pair:
        """A certificate for DNS name `name` (and 127.0.0.1), signed by this CA."""
        ca_cert = x509.load_pem_x509_certificate(self.cert.read_bytes())
        ca_key = serialization.load_pem_private_key(self.key.read_bytes(), None)
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            _builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), ca_cert.subject, key)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if not client:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        return _write(folder, name.replace("/", "_"), cert, key)


def _builder(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _write(folder: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Pair:
    folder.mkdir(parents=True, exist_ok=True)
    pair = Pair(folder / f"{stem}.crt", folder / f"{stem}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return pair


def make_ca(folder: Path, name: str = "imgctl test CA") -> CA:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} {uuid.uuid4().hex[:8]}")])
    cert = (
        _builder(subject, subject, key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    pair = _write(folder, "ca", cert, key)
    return CA(pair.cert, pair.key)


def registry_hostname() -> str:
    """A name that looks like no loopback address; `.test` never resolves on the internet (RFC 2606)."""
    return f"reg-{uuid.uuid4().hex[:8]}.imgctl.test"


@contextmanager
def hosts_entry(name: str) -> Iterator[None]:
    """`127.0.0.1 name` in /etc/hosts for the duration; only that line is removed afterwards.

    /etc/hosts is rewritten in place (it may be a bind mount) and other tests may edit it too:
    each edit re-reads the file and touches only our line.
    """
    line = f"127.0.0.1 {name}  # imgctl test"
    with _hosts_lock:
        text = HOSTS.read_text()
        HOSTS.write_text(text + ("" if text.endswith("\n") or not text else "\n") + line + "\n")
    try:
        yield
    finally:
        with _hosts_lock:
            kept = [entry for entry in HOSTS.read_text().splitlines(keepends=True) if entry.rstrip("\n") != line]
            HOSTS.write_text("".join(kept))


@contextmanager
def system_ca(ca: CA) -> Iterator[None]:
    """The CA in Debian's system store, as `update-ca-certificates` installs it; removed afterwards."""
    target = SYSTEM_CAS / f"imgctl-test-{uuid.uuid4().hex[:8]}.crt"
    SYSTEM_CAS.mkdir(parents=True, exist_ok=True)
    shutil.copy(ca.cert, target)
    try:
        subprocess.run(["update-ca-certificates"], check=True, capture_output=True, timeout=120)
        yield
    finally:
        target.unlink(missing_ok=True)
        subprocess.run(["update-ca-certificates"], check=True, capture_output=True, timeout=120)


@contextmanager
def certs_d(host: str, ca: CA | None = None, client: Pair | None = None) -> Iterator[Path]:
    """/etc/docker/certs.d/<host> holding ca.crt (and client.cert/client.key); removed afterwards.

    The daemon reads this folder on every connection, so nothing needs restarting.
    """
    folder = CERTS_D / host
    if folder.exists():
        raise RuntimeError(f"{folder} exists already: not ours to change")
    folder.mkdir(parents=True)
    try:
        if ca is not None:
            shutil.copy(ca.cert, folder / "ca.crt")
        if client is not None:
            shutil.copy(client.cert, folder / "client.cert")
            shutil.copy(client.key, folder / "client.key")
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class TLSRegistryServer(RegistryServer):
    """docker-registry on 127.0.0.1 serving `server`'s certificate; known to clients as `name:port`.

    `client_ca` makes it demand a client certificate signed by that CA (mutual TLS).
    """

    def __init__(self, workdir: Path, *, name: str, ca: CA, server: Pair, client_ca: CA | None = None, **kwargs: Any) -> None:
        super().__init__(workdir, **kwargs)
        self.ca, self.server, self.client_ca = ca, server, client_ca
        self.host = f"{name}:{self.port}"
        self.url = f"https://127.0.0.1:{self.port}"  # the certificate names 127.0.0.1 too
        self.session.verify = str(ca.cert)

    def _write_config(self) -> None:
        super()._write_config()
        config = yaml.safe_load(self.config_path.read_text())
        config["http"]["addr"] = f"127.0.0.1:{self.port}"
        config["http"]["tls"] = {"certificate": str(self.server.cert), "key": str(self.server.key)}
        if self.client_ca is not None:
            config["http"]["tls"]["clientcas"] = [str(self.client_ca.cert)]
        self.config_path.write_text(yaml.safe_dump(config))

    def use_client(self, pair: Pair) -> None:
        self.session.cert = (str(pair.cert), str(pair.key))

    def start(self) -> TLSRegistryServer:
        # RegistryServer.start polls with certifi's trust, which has never heard of our CA.
        if self._proc is not None:
            return self
        self._write_config()
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                ["docker-registry", "serve", str(self.config_path)], cwd=self.workdir,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                rc, self._proc = self._proc.returncode, None
                raise RuntimeError(f"docker-registry exited with {rc}:\n{self.log_text()}")
            try:
                self.session.get(f"{self.url}/v2/", timeout=1)
                return self  # any TLS answer will do: a client-cert registry may refuse us here
            except requests.exceptions.SSLError:
                if self.client_ca is not None:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"docker-registry did not answer on {self.url}:\n{self.log_text()}")
