"""The registries of one promotion, before anything moves: a client each, with credentials
checked (pull on the sources, pull,push on the destinations), and every source manifest read, so
that a missing one fails the promotion, naming it, with nothing moved. Its calls are retried per
the run's policy, each retry announced.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from imgctl.auth import Credentials, find_credentials
from imgctl.blobcopy import Repo
from imgctl.manifestcopy import read_manifest
from imgctl.errors import ImgctlError
from imgctl.events import Event, LoggedIn
from imgctl.plan_tags import PlannedTag
from imgctl.promote_plan import Promotion
from imgctl.refs import is_docker_hub
from imgctl.registry import Manifest, RegistryClient
from imgctl.retry import RetryPolicy, call_with_retries
from imgctl.retry_report import reporter
from imgctl.transport import is_loopback

T = TypeVar("T")


class SourceMissing(ImgctlError):
    """An image's source tag is not in the registry: nothing was moved."""


@dataclass
class PromotionRegistries:
    """One client per registry the promotion reads or writes, made and checked by connect()."""

    promotion: Promotion
    emit: Callable[[Event], None]  # safe to call from several threads
    policy: RetryPolicy
    environ: dict[str, str] | None
    cancelled: threading.Event
    insecure: Callable[[], frozenset[str]] | None  # which registries not on loopback speak plain HTTP
    _insecure: frozenset[str] | None = field(default=None, init=False, repr=False)  # asked once, when first needed
    _clients: dict[str, RegistryClient] = field(default_factory=dict, init=False, repr=False)

    def retrying(self, image: str | None, host: str) -> Callable[[str, Callable[[], T]], T]:
        def run(what: str, operation: Callable[[], T]) -> T:
            return call_with_retries(operation, policy=self.policy, on_retry=reporter(self.emit, image, what),
                                     cancelled=self.cancelled.is_set, registry=host)
        return run

    def client(self, key: str) -> RegistryClient:
        return self._clients[key]

    def connect(self) -> None:
        """Credentials for every registry involved, checked: pull on the sources, pull,push on the destinations."""
        paths: dict[str, dict[str, str]] = {}  # target -> repository -> actions
        for image in self.promotion.images:
            paths.setdefault(image.source.target, {}).setdefault(image.source.api_path, "pull")
            for tag in image.tags + image.held_back:
                paths.setdefault(tag.target, {})[tag.api_path] = "pull,push"
        for target in self.promotion.targets:
            if target.key not in paths:
                continue
            creds = find_credentials(target.host, target.username_env, target.password_env, self.environ)
            client = self._new_client(target.host, creds)
            self._clients[target.key] = client
            if creds is None:
                continue
            for actions in ("pull,push", "pull"):
                chosen = [path for path, wanted in paths[target.key].items() if wanted == actions]
                if chosen:
                    self.retrying(None, target.host)(f"login to {target.host}",
                                                     lambda: client.check_access(chosen, actions))
            self.emit(LoggedIn(registry=target.host, username=creds.username, source=creds.source))

    def _new_client(self, host: str, creds: Credentials | None) -> RegistryClient:
        if is_loopback(host) or is_docker_hub(host) or self.insecure is None:
            return RegistryClient(host, creds)
        if self._insecure is None:
            self._insecure = self.insecure()
        return RegistryClient(host, creds, insecure=self._insecure)

    def resolve(self) -> dict[tuple[str, PlannedTag], Manifest]:
        """Every image's source manifest, read now; a missing one fails the promotion before anything moves."""
        sources: dict[tuple[str, PlannedTag], Manifest] = {}
        missing: list[str] = []
        for image in self.promotion.images:
            source = image.source
            repo = Repo(self.client(source.target), source.api_path)
            found = self.retrying(image.name, source.host)(
                f"read {source.reference}", lambda: read_manifest(repo, source.tag))
            if found is None:
                missing.append(f"{image.name} ({source.reference})")
                continue
            sources[image.name, source] = found
        if missing:
            raise SourceMissing(
                f"cannot promote {self.promotion.source_version} to {self.promotion.version}: no source image for "
                + ", ".join(dict.fromkeys(missing)) + "; nothing was moved",
                hint=f"Release {self.promotion.source_version} first, or check --from.",
            )
        return sources
