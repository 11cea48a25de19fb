"""Every failure imgctl expects, each with its exit code and a hint for the user.

Only the CLI catches these; it prints the message (and hint) in a few lines on stderr.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_LOCKED = 75
EXIT_INTERRUPTED = 130


class ImgctlError(Exception):
    """Base of every expected failure."""

    exit_code = EXIT_FAILED
    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint


class ConfigError(ImgctlError):
    """The config file is missing, unreadable or invalid."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message, hint=hint)
        self.path = path


class UsageError(ImgctlError):
    """A flag or a missing value the user must supply."""

    exit_code = EXIT_USAGE


class EngineUnavailable(ImgctlError):
    hint = (
        "Start the Docker engine (e.g. `sudo dockerd` or `sudo systemctl start docker`), "
        "or point DOCKER_HOST / `docker context use` at a running one."
    )


class BuildFailed(ImgctlError):
    def __init__(self, message: str, *, output: tuple[str, ...] = (), hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.output = output


class AuthFailed(ImgctlError):
    """The registry refused the credentials. Never retried."""


class PushFailed(ImgctlError):
    def __init__(self, message: str, *, transient: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after


class RegistryError(ImgctlError):
    """Talking to the registry's HTTP API failed (verification)."""

    def __init__(self, message: str, *, transient: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after


class VerifyFailed(ImgctlError):
    """The registry does not hold the digest that the push reported."""


class LockBusy(ImgctlError):
    exit_code = EXIT_LOCKED


class Interrupted(ImgctlError):
    exit_code = EXIT_INTERRUPTED
