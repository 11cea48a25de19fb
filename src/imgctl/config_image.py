"""One image of the config: what it builds, how it is tagged, and the secrets, SSH agents and
caches its build may use.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, StringConstraints, field_validator, model_validator

from imgctl import refs
from imgctl.config_fields import ENV_NAME_PATTERN, Model, Platforms, TagEntry, Template, parse_size


class SecretConfig(Model):
    """Where a build secret's value is: an environment variable, or a file (relative to the
    config's folder). Never the value itself."""

    env: str | None = Field(default=None, pattern=ENV_NAME_PATTERN, description="The variable holding the value.")
    file: str | None = Field(default=None, min_length=1, description="The file holding the value, relative to the config.")

    @model_validator(mode="after")
    def _one(self) -> SecretConfig:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of env (a variable's name) or file (a path): never the value itself")
        return self


SECRET_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
# `default`, another id served by $SSH_AUTH_SOCK, or {id: path of an agent's socket}
SshEntry = Annotated[str, StringConstraints(pattern=SECRET_ID)] | dict[Annotated[str, StringConstraints(pattern=SECRET_ID)], str]


class ImageConfig(Model):
    name: str
    context: str = "."
    dockerfile: str = "Dockerfile"
    target: str | None = None
    build_args: dict[str, Template] = Field(default_factory=dict)
    labels: dict[str, Template] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
    tags: Annotated[list[TagEntry], Field(min_length=1)] = Field(default_factory=lambda: ["{version}"])
    registries: list[str] | None = None
    max_size: Annotated[int | None, BeforeValidator(lambda v: parse_size(v) if isinstance(v, str) else v)] = Field(
        default=None, gt=0, description="Fail the image before it is pushed if it is larger, e.g. 200MB."
    )
    platforms: Platforms | None = Field(
        default=None, description="Build for these platforms (os/arch[/variant]) and push an image index; replaces the top-level platforms."
    )
    secrets: dict[Annotated[str, StringConstraints(pattern=SECRET_ID)], SecretConfig] = Field(
        default_factory=dict, description="Build secrets by id (RUN --mount=type=secret,id=ID): {env: VAR} or {file: PATH}; BuildKit only."
    )
    ssh: list[SshEntry] = Field(
        default_factory=list, description="SSH agents (RUN --mount=type=ssh): default ($SSH_AUTH_SOCK), or {id: agent socket}; BuildKit only."
    )
    cache_from: list[Template] = Field(
        default_factory=list, description="Images whose layers the build may reuse (templates); a missing one is no error."
    )
    inline_cache: bool = Field(default=False, description="Embed BuildKit cache metadata in the pushed image, for cache_from.")

    @field_validator("ssh")
    @classmethod
    def _one_agent_each(cls, value: list[Any]) -> list[Any]:
        for entry in value:
            if isinstance(entry, dict) and len(entry) != 1:
                raise ValueError("each entry is `default`, an id, or one {id: path of an agent's socket}")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not refs.REPOSITORY_RE.match(value):
            raise ValueError(f"{value!r} is not a valid repository name: lowercase letters, digits and . _ - separators, / between parts")
        return value

    @field_validator("build_args")
    @classmethod
    def _arg_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not key or any(c.isspace() or c == "=" for c in key):
                raise ValueError(f"{key!r} is not a valid build arg name")
        return value
