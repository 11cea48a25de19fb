"""The config file: its top-level model (registries, retries, the images), where it is found, and
loading it with errors that name the field.

The image model is config_image.py's, the field types config_fields.py's, and the problems a
user is shown config_problems.py's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, ValidationError, field_validator

from imgctl import refs
from imgctl.config_fields import EnvName, Model, Platforms, TagEntry, TagSpec, check_namespace, check_registry
from imgctl.config_image import ImageConfig, SecretConfig
from imgctl.config_problems import Problem, format_problems, pydantic_problems, secret_keys, semantic_problems
from imgctl.errors import ConfigError
from imgctl.retry import DEFAULT_WINDOW
from imgctl.yamlload import read_yaml

CONFIG_ENV = "IMGCTL_CONFIG"
DEFAULT_LOCATIONS = (Path("imgctl.yaml"), Path("config/imgctl.yaml"))


class AuthConfig(Model):
    """Names of environment variables that hold the credentials, never the credentials themselves."""

    username_env: EnvName = "DOCKERHUB_USERNAME"
    password_env: EnvName = "DOCKERHUB_TOKEN"


class RegistryConfig(Model):
    name: str = Field(default="", pattern=r"^$|^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    url: str
    namespace: str = ""
    auth: AuthConfig | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_registry(value)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        return check_namespace(value)

    @property
    def key(self) -> str:
        return self.name or self.url


class RetryConfig(Model):
    """How long imgctl keeps retrying a registry that fails transiently (5xx, 429, resets, timeouts)."""

    window: float = Field(
        default=DEFAULT_WINDOW, ge=0, le=3600, allow_inf_nan=False,
        description="Seconds each operation retries for, from its first failure (0: no retries); --retry-window overrides it.",
    )

    @field_validator("window", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> Any:
        if isinstance(value, bool):  # pydantic would read `true` as 1 second
            raise ValueError("must be a number of seconds, e.g. 90")
        return value


def _retry_mapping(value: Any) -> Any:
    if not isinstance(value, (dict, RetryConfig)):
        raise ValueError("must be a mapping, e.g. `retry: {window: 90}` (seconds)")
    return value


class Config(Model):
    """An imgctl config file. Paths are relative to the file's folder."""

    registry: str = refs.DOCKER_HUB
    namespace: str = ""
    auth: AuthConfig = Field(default_factory=AuthConfig)
    registries: list[RegistryConfig] | None = Field(
        default=None, min_length=1, description="Push to several registries; replaces registry/namespace/auth."
    )
    images: Annotated[list[ImageConfig], Field(min_length=1)]
    nightly_tags: Annotated[list[TagEntry], Field(min_length=1)] = Field(
        default_factory=lambda: ["nightly", "nightly-{date}"]
    )
    nightly_cache: bool = Field(default=False, description="Let --nightly builds use the build cache.")
    oci_labels: bool = Field(default=True, description="Add the org.opencontainers.image.* labels.")
    builder: Literal["auto", "classic", "buildkit"] = Field(
        default="auto", description="The engine's builder: auto (BuildKit where the engine has it), classic or buildkit; --builder overrides it."
    )
    retry: Annotated[RetryConfig, BeforeValidator(_retry_mapping)] = Field(default_factory=RetryConfig)
    platforms: Platforms | None = Field(
        default=None, description="Every image's platforms (os/arch[/variant]), unless it names its own; --platform overrides both."
    )

    @field_validator("registry")
    @classmethod
    def _registry(cls, value: str) -> str:
        return check_registry(value)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        return check_namespace(value)

    def targets(self) -> list[RegistryConfig]:
        """Every registry to push to, the shorthand `registry`/`namespace`/`auth` included."""
        if self.registries:
            return list(self.registries)
        return [RegistryConfig(name="default", url=self.registry, namespace=self.namespace, auth=self.auth)]


@dataclass(frozen=True)
class LoadedConfig:
    config: Config
    path: Path

    @property
    def base_dir(self) -> Path:
        return self.path.parent


def find_config(explicit: Path | None, *, cwd: Path | None = None, environ: dict[str, str] | None = None) -> Path:
    """`-c FILE`, else $IMGCTL_CONFIG, else ./imgctl.yaml, else ./config/imgctl.yaml."""
    environ = os.environ if environ is None else environ
    cwd = cwd or Path.cwd()
    if explicit is not None:
        return explicit
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV])
    for candidate in DEFAULT_LOCATIONS:
        if (cwd / candidate).is_file():
            return cwd / candidate
    raise ConfigError(
        "no config file found",
        hint=f"Pass -c FILE, set ${CONFIG_ENV}, or create ./imgctl.yaml or ./config/imgctl.yaml.",
    )


def load_config(path: Path) -> LoadedConfig:
    """Read, validate and check a config file; raise ConfigError naming every bad field."""
    data, positions = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping with at least an `images:` list")
    problems: list[Problem] = list(secret_keys(data))
    if not problems:
        try:
            config = Config.model_validate(data)
        except ValidationError as exc:
            problems.extend(pydantic_problems(exc, _MODELS))
        else:
            problems.extend(semantic_problems(config, path.parent, data))
    if problems:
        raise ConfigError(format_problems(path, positions, problems))
    return LoadedConfig(config=config, path=path.resolve())


# The model of the section under each key, for "unknown key ...; did you mean ...?".
_MODELS: dict[str, type[BaseModel]] = {
    "": Config, "auth": AuthConfig, "images": ImageConfig, "registries": RegistryConfig, "tags": TagSpec,
    "nightly_tags": TagSpec, "retry": RetryConfig, "secrets": SecretConfig,
}
