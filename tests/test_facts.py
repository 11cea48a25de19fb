"""Facts: versions, CI variables, and git facts read from a real temporary repository."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from imgctl.errors import UsageError
from imgctl.facts import Facts, gather, parse_version, strip_userinfo, with_version

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")

NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def _isolated_git(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    # git must see neither the user's config nor a repository around the temporary folders.
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(home.parent.parent))
    for name in list(os.environ):
        if name.startswith("GIT_") and name not in ("GIT_CONFIG_NOSYSTEM", "GIT_CEILING_DIRECTORIES"):
            monkeypatch.delenv(name)


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false",
         "-c", "tag.gpgsign=false", *args],
        cwd=repo, capture_output=True, text=True, check=True,
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "-c", "init.defaultBranch=main", "init", "-q")
    (path / "imgctl.yaml").write_text("images: []\n")
    git(path, "add", "imgctl.yaml")
    git(path, "commit", "-q", "-m", "first")
    return path


# --- parse_version -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("1.2.3", ("1.2.3", 1, 2, 3, None)),
    ("v1.2.3", ("1.2.3", 1, 2, 3, None)),
    ("V10.20.30", ("10.20.30", 10, 20, 30, None)),
    (" 0.0.1\n", ("0.0.1", 0, 0, 1, None)),
    ("2.0.0-rc.1", ("2.0.0-rc.1", 2, 0, 0, "rc.1")),
    ("v1.0.0-alpha-beta.0.x", ("1.0.0-alpha-beta.0.x", 1, 0, 0, "alpha-beta.0.x")),
])
def test_parse_version(text: str, expected: tuple[object, ...]) -> None:
    version = parse_version(text)
    assert (version.text, version.major, version.minor, version.patch, version.prerelease) == expected
    assert version.is_prerelease is (expected[4] is not None)


@pytest.mark.parametrize("text", ["", "1", "1.2", "1.2.3.4", "01.2.3", "1.02.3", "1.2.3-", "1.2.3-01", "vv1.2.3",
                                  "version1", "1.2.3 beta", "1.2.x", "latest"])
def test_parse_version_refuses_what_is_not_semver(text: str) -> None:
    with pytest.raises(UsageError) as raised:
        parse_version(text, source="GITHUB_REF_NAME")
    assert "is not a semantic version" in raised.value.message
    assert "(from GITHUB_REF_NAME)" in raised.value.message
    assert "MAJOR.MINOR.PATCH" in raised.value.hint


@pytest.mark.parametrize("text", ["1.2.3+build.5", "v1.2.3-rc.1+sha.abc"])
def test_parse_version_refuses_build_metadata(text: str) -> None:
    with pytest.raises(UsageError) as raised:
        parse_version(text)
    assert "build metadata" in raised.value.message
    assert "cannot hold" in raised.value.message


# --- gather: version --------------------------------------------------------------------------------


def test_version_flag_wins(repo: Path) -> None:
    git(repo, "tag", "v2.3.4")
    found = gather(repo, version="v9.8.7", environ={"GITHUB_REF_TYPE": "tag", "GITHUB_REF_NAME": "v1.0.0"}, now=NOW)
    assert (found.version.text, found.version_source) == ("9.8.7", "--version")


def test_version_from_github_tag(tmp_path: Path) -> None:
    env = {"GITHUB_REF_TYPE": "tag", "GITHUB_REF_NAME": "v1.4.0-rc.2", "GITHUB_SHA": "a" * 40}
    found = gather(tmp_path, version=None, environ=env, now=NOW)
    assert (found.version.text, found.version_source) == ("1.4.0-rc.2", "GITHUB_REF_NAME")
    assert found.version.is_prerelease
    assert found.branch is None  # a tag build is on no branch


def test_github_branch_ref_is_not_a_version(tmp_path: Path) -> None:
    env = {"GITHUB_REF_TYPE": "branch", "GITHUB_REF_NAME": "1.2.3", "GITHUB_SHA": "a" * 40}
    found = gather(tmp_path, version=None, environ=env, now=NOW)
    assert found.version is None
    assert found.branch == "1.2.3"


def test_github_tag_that_is_not_a_version(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="GITHUB_REF_NAME"):
        gather(tmp_path, version=None, environ={"GITHUB_REF_TYPE": "tag", "GITHUB_REF_NAME": "nightly"}, now=NOW)


def test_version_from_git_describe(repo: Path) -> None:
    git(repo, "tag", "v2.3.4")
    found = gather(repo, version=None, environ={}, now=NOW)
    assert (found.version.text, found.version_source) == ("2.3.4", "git tag v2.3.4")


def test_annotated_tag_from_a_subfolder(repo: Path) -> None:
    git(repo, "tag", "-a", "-m", "release", "3.0.0")
    (repo / "config").mkdir()
    found = gather(repo / "config", version=None, environ={}, now=NOW)
    assert found.version is not None and found.version.text == "3.0.0"


def test_no_version_when_head_is_not_tagged(repo: Path) -> None:
    git(repo, "tag", "v2.3.4")
    (repo / "more").write_text("x")
    git(repo, "add", "more")
    git(repo, "commit", "-q", "-m", "second")
    found = gather(repo, version=None, environ={}, now=NOW)
    assert (found.version, found.version_source) == (None, None)


@pytest.mark.parametrize("tag", ["release-candidate", "vv2.3.4", "v2.3"])
def test_tag_that_is_not_a_version_is_ignored(repo: Path, tag: str) -> None:
    git(repo, "tag", tag)
    assert gather(repo, version=None, environ={}, now=NOW).version is None


def test_nightly_does_not_look_for_a_version(repo: Path) -> None:
    git(repo, "tag", "v2.3.4")
    env = {"GITHUB_REF_TYPE": "tag", "GITHUB_REF_NAME": "not-a-version"}
    assert gather(repo, version=None, want_version=False, environ=env, now=NOW).version is None


# --- gather: git facts ---------------------------------------------------------------------------------


def test_git_sha_branch_and_remote_from_a_repository(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "feature/x")
    git(repo, "remote", "add", "origin", "https://x-access-token:ghp_SECRET123@github.com/acme/widgets.git")
    found = gather(repo, version=None, environ={}, now=NOW)
    assert found.git_sha == git(repo, "rev-parse", "HEAD")
    assert len(found.git_sha) == 40
    assert found.branch == "feature/x"
    assert found.source_url == "https://github.com/acme/widgets.git"


def test_another_version_of_the_same_checkout(repo: Path) -> None:
    # promote plans two versions of one checkout from one gather: only the version differs
    git(repo, "checkout", "-q", "-b", "main2")
    found = gather(repo, version="1.4.0", environ={}, now=NOW)
    rc = with_version(found, "1.4.0-rc.2", source="--from")
    assert (rc.version.text, rc.version_source) == ("1.4.0-rc.2", "--from")
    assert (rc.git_sha, rc.branch, rc.now, rc.source_time) == (found.git_sha, "main2", found.now, found.source_time)
    with pytest.raises(UsageError, match="--from"):
        with_version(found, "not-a-version", source="--from")


def test_detached_head_has_no_branch(repo: Path) -> None:
    git(repo, "checkout", "-q", "--detach")
    found = gather(repo, version=None, environ={}, now=NOW)
    assert found.git_sha is not None
    assert (found.branch, found.source_url) == (None, None)


def test_outside_a_repository(tmp_path: Path) -> None:
    found = gather(tmp_path, version=None, environ={}, now=NOW)
    assert (found.version, found.git_sha, found.branch, found.source_url) == (None, None, None, None)


def test_repository_without_commits(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    found = gather(tmp_path, version=None, environ={}, now=NOW)
    assert (found.git_sha, found.branch) == (None, None)


def test_github_variables_win_over_the_repository(repo: Path) -> None:
    env = {
        "GITHUB_SHA": "f" * 40, "GITHUB_REF_TYPE": "branch", "GITHUB_REF_NAME": "release/2024",
        "GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "acme/widgets",
    }
    found = gather(repo, version=None, environ=env, now=NOW)
    assert (found.git_sha, found.branch, found.source_url) == ("f" * 40, "release/2024", "https://github.com/acme/widgets")


def test_pull_request_uses_the_head_branch(tmp_path: Path) -> None:
    env = {"GITHUB_SHA": "e" * 40, "GITHUB_REF_NAME": "17/merge", "GITHUB_HEAD_REF": "fix/typo"}
    assert gather(tmp_path, version=None, environ=env, now=NOW).branch == "fix/typo"


def test_source_date_epoch(tmp_path: Path) -> None:
    """SOURCE_DATE_EPOCH sets the `created` label; `{date}` stays the day of the run."""
    found = gather(tmp_path, version=None, environ={"SOURCE_DATE_EPOCH": "1700000000"})
    assert found.source_time == datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)
    assert found.created == "2023-11-14T22:13:20Z"
    assert found.date == datetime.now(timezone.utc).strftime("%Y%m%d")


def test_date_and_created() -> None:
    found = Facts(None, None, None, None, None, NOW)
    assert (found.date, found.created) == ("20240506", "2024-05-06T07:08:09Z")


# --- strip_userinfo ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "expected"), [
    ("https://x-access-token:ghp_abc123@github.com/acme/w.git", "https://github.com/acme/w.git"),
    ("https://ghp_abc123@github.com/acme/w", "https://github.com/acme/w"),
    ("https://user:p@ss@gitlab.example.com:8443/a/b.git", "https://gitlab.example.com:8443/a/b.git"),
    ("ssh://git:token@host.example/repo.git", "ssh://host.example/repo.git"),
    ("https://github.com/acme/w.git", "https://github.com/acme/w.git"),
    ("git@github.com:acme/w.git", "git@github.com:acme/w.git"),
    ("/srv/git/w.git", "/srv/git/w.git"),
])
def test_strip_userinfo(url: str, expected: str) -> None:
    assert strip_userinfo(url) == expected


def test_created_is_the_commit_time_so_rebuilds_are_identical(repo: Path) -> None:
    stamp = int(git(repo, "log", "-1", "--format=%ct"))
    first = gather(repo, version=None, environ={})
    second = gather(repo, version=None, environ={})
    assert first.source_time == datetime.fromtimestamp(stamp, timezone.utc)
    assert first.created == second.created


def test_created_is_now_outside_git(tmp_path: Path) -> None:
    found = gather(tmp_path, version=None, environ={})
    assert found.source_time is None
    assert found.created == found.now.strftime("%Y-%m-%dT%H:%M:%SZ")
