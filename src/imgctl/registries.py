"""The registries a release writes to: whose credentials, checked once before anything is
built, and one client each, shared by every image of the run."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from imgctl.auth import Credentials, find_credentials
from imgctl.events import Event, LoggedIn
from imgctl.plan import Plan, PlannedTag
from imgctl.dockerfile import split_reference
from imgctl.refs import is_docker_hub
from imgctl.registry import RegistryClient
from imgctl.retry import RetryPolicy, call_with_retries
from imgctl.retry_report import reporter
from imgctl.transport import is_loopback

if TYPE_CHECKING:  # for annotations: promote imports docker-py only to read the engine's insecure registries
    from imgctl.engine import Engine


class Registries:
    def __init__(
        self, plan: Plan, engine: Engine, policy: RetryPolicy, emit: Callable[[Event], None],
        environ: dict[str, str] | None = None, cancelled: threading.Event | None = None,
    ) -> None:
        self.plan = plan
        self.engine = engine
        self.policy = policy
        self.emit = emit
        self.environ = environ
        self.cancelled = cancelled or threading.Event()
        self._creds: dict[str, Credentials | None] = {}
        self._clients: dict[str, RegistryClient] = {}
        self._insecure: frozenset[str] | None = None  # asked of the daemon for the first registry not on loopback

    def authenticate(self) -> None:
        """Credentials for every target the release writes to, checked with the registry: one
        token request for push to every repository of the release there."""
        paths: dict[str, list[str]] = {}
        for image in self.plan.images:
            for tag in image.tags + image.held_back:
                repositories = paths.setdefault(tag.target, [])
                if tag.api_path not in repositories:
                    repositories.append(tag.api_path)
        for target in self.plan.targets:
            if target.key not in paths:
                continue
            creds = find_credentials(target.host, target.username_env, target.password_env, self.environ)
            client = self._new_client(target.host, creds)
            if creds is not None:
                call_with_retries(
                    lambda: client.check_access(paths[target.key]),
                    policy=self.policy,
                    on_retry=reporter(self.emit, None, f"login to {target.host}"),
                    cancelled=self.cancelled.is_set, registry=target.host,
                )
                self.emit(LoggedIn(registry=target.host, username=creds.username, source=creds.source))
            self._creds[target.key] = creds
            self._clients[target.key] = client

    def creds(self, target: str) -> Credentials | None:
        """The credentials of a target (a registry's key in the config); None: anonymous."""
        return self._creds.get(target)

    def client(self, tag: PlannedTag) -> RegistryClient:
        """The client for the tag's registry (made at login; made here when nothing is pushed)."""
        if tag.target not in self._clients:
            self._clients[tag.target] = self._new_client(tag.host, self._creds.get(tag.target))
        return self._clients[tag.target]

    def _new_client(self, host: str, creds: Credentials | None) -> RegistryClient:
        if is_loopback(host) or is_docker_hub(host):
            return RegistryClient(host, creds)  # plain HTTP, and HTTPS, whatever the daemon says
        if self._insecure is None:
            self._insecure = self.engine.insecure_registries()
        return RegistryClient(host, creds, insecure=self._insecure)

    def creds_for(self, reference: str) -> Credentials | None:
        """The credentials for pulling `reference` (see creds_for_host)."""
        return self.creds_for_host(split_reference(reference)[0])

    def creds_for_host(self, host: str) -> Credentials | None:
        """The credentials for pulling from `host`: those of that registry if the config pushes
        there, else what the docker config holds for it (the same sources, in the same order).
        BuildKit's session asks this from its own threads, while builds run."""
        for target in self.plan.targets:
            if target.host == host or (is_docker_hub(target.host) and is_docker_hub(host)):
                if target.key in self._creds:
                    return self._creds[target.key]
                return find_credentials(target.host, target.username_env, target.password_env, self.environ)
        return find_credentials(host, None, None, self.environ)
