"""Build secrets (`RUN --mount=type=secret`) and SSH agents (`RUN --mount=type=ssh`) an image's
build may use: named by the config, never written in it, read when the release starts.

A secret's value comes from an environment variable or a file; it is registered for redaction
like a password, handed to BuildKit through the build's session, and never written anywhere: not
to an output, a log, an event, a report, a layer or the image's history. An SSH agent is relayed
to the build, never copied: the keys stay in the agent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from imgctl.auth import remember_secret
from imgctl.errors import UsageError

MAX_SECRET = 4 * 1024 * 1024  # what BuildKit v0.8 (dockerd 20.10) takes in one gRPC message


@dataclass(frozen=True)
class SecretSource:
    id: str
    env: str | None = None  # the variable holding it
    file: Path | None = None  # or the file holding it (absolute: the config's folder resolved)


@dataclass(frozen=True)
class AgentSource:
    id: str  # "default": the one a bare `--mount=type=ssh` uses
    path: Path | None = None  # an agent's socket; None: $SSH_AUTH_SOCK


@dataclass(frozen=True)
class BuildSecrets:
    secrets: dict[str, bytes] = field(default_factory=dict, repr=False)
    ssh: dict[str, str] = field(default_factory=dict)


def resolve(
    image: str, secrets: tuple[SecretSource, ...], agents: tuple[AgentSource, ...], environ: dict[str, str] | None = None,
) -> BuildSecrets:
    """The values and sockets an image's build gets; a UsageError (exit 2) naming what is
    missing, before anything is built."""
    env = os.environ if environ is None else environ
    values: dict[str, bytes] = {}
    for source in secrets:
        where = f"{image}: secret {source.id}"
        if source.env is not None:
            if source.env not in env:
                raise UsageError(f"{where}: the environment variable {source.env} is not set",
                                 hint=f"Set {source.env}, or give the secret as {{file: PATH}}.")
            value = env[source.env].encode()
        else:
            assert source.file is not None
            try:
                value = source.file.read_bytes()
            except OSError as exc:
                raise UsageError(f"{where}: cannot read {source.file}: {exc.strerror or exc}") from None
        if len(value) > MAX_SECRET:
            raise UsageError(f"{where} is {len(value)} bytes; a build secret may hold at most 4 MiB")
        text = value.decode("utf-8", "replace")
        for shown in {text, text.strip()}:  # as a RUN step would print it, with or without its newline
            remember_secret(shown)
        values[source.id] = value
    sockets: dict[str, str] = {}
    for agent in agents:
        path = agent.path if agent.path is not None else (Path(env["SSH_AUTH_SOCK"]) if env.get("SSH_AUTH_SOCK") else None)
        if path is None:
            raise UsageError(f"{image}: ssh {agent.id}: SSH_AUTH_SOCK is not set",
                             hint="Start an agent (`eval $(ssh-agent)`, `ssh-add`), or name its socket: ssh: [{default: PATH}].")
        if not path.is_socket():
            raise UsageError(f"{image}: ssh {agent.id}: {path} is not an agent's socket")
        sockets[agent.id] = str(path)
    return BuildSecrets(values, sockets)
