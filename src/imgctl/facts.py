"""What a release knows about the world: the version, git facts, the date.

Read from flags, the CI environment (GitHub Actions variables) and the git repository around the
config file. Everything is gathered once, up front, so the planner stays pure.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from imgctl.errors import UsageError

_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)


@dataclass(frozen=True)
class Version:
    text: str
    major: int
    minor: int
    patch: int
    prerelease: str | None

    @property
    def is_prerelease(self) -> bool:
        return self.prerelease is not None


def parse_version(text: str, *, source: str = "--version") -> Version:
    """A semantic version, a leading `v` allowed (v1.2.3 is version 1.2.3)."""
    cleaned = text.strip()
    cleaned = cleaned[1:] if cleaned[:1] in ("v", "V") else cleaned
    match = _SEMVER.match(cleaned)
    if not match:
        raise UsageError(
            f"{text!r} (from {source}) is not a semantic version",
            hint="Use MAJOR.MINOR.PATCH, optionally with a pre-release: 1.4.0, v2.0.1, 1.5.0-rc.1",
        )
    if match.group(5):
        raise UsageError(
            f"{text!r} (from {source}) has build metadata (+{match.group(5)}), which a Docker tag cannot hold",
            hint="Drop the +... part, or use a pre-release such as 1.2.3-build.5",
        )
    return Version(cleaned, int(match.group(1)), int(match.group(2)), int(match.group(3)), match.group(4))


@dataclass(frozen=True)
class Facts:
    version: Version | None
    version_source: str | None
    git_sha: str | None
    branch: str | None
    source_url: str | None
    now: datetime
    # When the sources were made: SOURCE_DATE_EPOCH, else the commit time. The `created` label
    # uses it, so rebuilding an unchanged commit gives the very same image (and digest).
    source_time: datetime | None = None

    @property
    def date(self) -> str:
        return self.now.strftime("%Y%m%d")

    @property
    def created(self) -> str:
        return (self.source_time or self.now).strftime("%Y-%m-%dT%H:%M:%SZ")


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def strip_userinfo(url: str) -> str:
    """A remote URL without any user:token@ part: it ends up in an image label."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    if parts.scheme and "@" in parts.netloc:
        return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    return url


def with_version(facts: Facts, version: str, *, source: str) -> Facts:
    """The same facts for another version (promote plans two versions of one checkout)."""
    return replace(facts, version=parse_version(version, source=source), version_source=source)


def gather(
    where: Path,
    *,
    version: str | None,
    want_version: bool = True,
    environ: dict[str, str] | None = None,
    now: datetime | None = None,
) -> Facts:
    """Collect the facts; the version from --version, else a CI tag, else `git describe --exact-match`."""
    env = os.environ if environ is None else environ
    on_tag = env.get("GITHUB_REF_TYPE") == "tag" and env.get("GITHUB_REF_NAME")
    parsed: Version | None = None
    source: str | None = None
    if version is not None:
        parsed, source = parse_version(version, source="--version"), "--version"
    elif want_version and on_tag:
        parsed, source = parse_version(env["GITHUB_REF_NAME"], source="GITHUB_REF_NAME"), "GITHUB_REF_NAME"
    elif want_version:
        described = _git(["describe", "--tags", "--exact-match"], where)
        if described and _SEMVER.match(described[1:] if described[:1] in ("v", "V") else described):
            parsed, source = parse_version(described, source="git tag"), f"git tag {described}"

    if env.get("GITHUB_SHA"):
        sha: str | None = env["GITHUB_SHA"]
        branch = env.get("GITHUB_REF_NAME") if env.get("GITHUB_REF_TYPE", "branch") == "branch" else None
        branch = env.get("GITHUB_HEAD_REF") or branch
    else:
        # One git for both (each git run costs a few ms of start-up): the commit, then the branch.
        head = (_git(["rev-parse", "HEAD", "--abbrev-ref", "HEAD"], where) or "").splitlines()
        sha = head[0] if head else None
        branch = head[1] if len(head) > 1 and head[1] != "HEAD" else None

    if env.get("GITHUB_SERVER_URL") and env.get("GITHUB_REPOSITORY"):
        source_url: str | None = f"{env['GITHUB_SERVER_URL']}/{env['GITHUB_REPOSITORY']}"
    else:
        remote = _git(["remote", "get-url", "origin"], where) if sha else None
        source_url = strip_userinfo(remote) if remote else None

    epoch = env.get("SOURCE_DATE_EPOCH", "")
    if not epoch.isdigit() and sha:
        epoch = _git(["log", "-1", "--format=%ct", sha], where) or ""
    source_time = datetime.fromtimestamp(int(epoch), timezone.utc) if epoch.isdigit() else None
    return Facts(parsed, source, sha, branch, source_url or None, now or datetime.now(timezone.utc), source_time)
