"""Launch a real `docker-registry` (distribution 2.8) on 127.0.0.1 for tests."""

from __future__ import annotations

import hashlib
import secrets
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import urljoin

import requests

# Without this Accept header registry 2.8 answers a schema1 manifest whose digest differs
# from the one the daemon pushed.
MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RegistryServer:
    def __init__(
        self,
        workdir: Path,
        *,
        htpasswd: tuple[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.htpasswd = htpasswd
        self.port = port if port is not None else free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.log_path = self.workdir / "registry.log"
        self.config_path = self.workdir / "config.yml"
        self._proc: subprocess.Popen[bytes] | None = None
        self.session = requests.Session()
        self.session.trust_env = False  # never route 127.0.0.1 through an env proxy
        if htpasswd is not None:
            self.session.auth = htpasswd

    # -- lifecycle ---------------------------------------------------------------------------

    def _write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        storage = self.workdir / "storage"
        storage.mkdir(exist_ok=True)
        auth = ""
        if self.htpasswd is not None:
            user, password = self.htpasswd
            line = subprocess.run(
                ["htpasswd", "-Bbn", user, password],
                check=True,
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.strip()
            pw_file = self.workdir / "htpasswd"
            pw_file.write_text(line + "\n")
            auth = f"auth:\n  htpasswd:\n    realm: imgctl-test\n    path: {pw_file}\n"
        self.config_path.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {storage}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n  secret: {secrets.token_hex(16)}\n"
            + auth
        )

    def start(self) -> RegistryServer:
        if self._proc is not None:
            return self
        self._write_config()
        # The registry only logs to stderr; the access log goes to stdout. Keep both.
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                ["docker-registry", "serve", str(self.config_path)],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                rc = self._proc.returncode
                self._proc = None
                raise RuntimeError(f"docker-registry exited with {rc}:\n{self.log_text()}")
            try:
                r = requests.get(f"{self.url}/v2/", timeout=1, proxies={"http": "", "https": ""})
                if r.status_code in (200, 401):
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"docker-registry did not answer on {self.host}:\n{self.log_text()}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.session.close()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- queries -----------------------------------------------------------------------------

    def tags(self, repo: str) -> list[str]:
        r = self.session.get(f"{self.url}/v2/{repo}/tags/list", timeout=5)
        if r.status_code == 404:
            return []
        r.raise_for_status()
        return list(r.json().get("tags") or [])

    def manifest_digest(self, repo: str, ref: str) -> str | None:
        r = self.session.head(
            f"{self.url}/v2/{repo}/manifests/{ref}",
            headers={"Accept": MANIFEST_ACCEPT},
            timeout=5,
        )
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return r.headers["Docker-Content-Digest"]

    # -- writing what other tools push (indexes, attestations) -------------------------------

    def put_blob(self, repo: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        started = self.session.post(f"{self.url}/v2/{repo}/blobs/uploads/", timeout=10)
        started.raise_for_status()
        location = urljoin(self.url, started.headers["Location"])
        done = self.session.put(location, params={"digest": digest}, data=data,
                                headers={"Content-Type": "application/octet-stream"}, timeout=10)
        done.raise_for_status()
        return digest

    def get_manifest(self, repo: str, ref: str) -> tuple[bytes, str]:
        r = self.session.get(f"{self.url}/v2/{repo}/manifests/{ref}", headers={"Accept": MANIFEST_ACCEPT}, timeout=10)
        r.raise_for_status()
        return r.content, r.headers["Content-Type"]

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        r = self.session.put(f"{self.url}/v2/{repo}/manifests/{ref}", data=body, headers={"Content-Type": media_type}, timeout=10)
        r.raise_for_status()
        return r.headers["Docker-Content-Digest"]
