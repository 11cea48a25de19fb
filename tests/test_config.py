"""The config file: every broken config is refused through the real CLI with exit 2, the field path
and (where there is one) the line:column; discovery of the config file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imgctl.cli import main
from imgctl.config import find_config, load_config
from imgctl.errors import ConfigError

VALID = """\
registry: ghcr.io
namespace: acme
images:
  - name: base
    context: base
  - name: app
    context: app
    depends_on: [base]
    build_args:
      BASE: "{registry}/{namespace}/base:{version}"
    tags: ["{version}", "{major}.{minor}", latest, {tag: stable, floating: true}]
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name in ("app", "base"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "Dockerfile").write_text("FROM alpine:3.20\n")
    (tmp_path / "notes.txt").write_text("a file, not a folder\n")
    return tmp_path


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The CLI in this process, through main(): its error boundary and its sys.exit included."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    out, err = capsys.readouterr()
    code = exited.value.code
    return (0 if code is None else code), out, err


def run_module(args: list[str], cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "IMGCTL_"))}
    return subprocess.run(
        [sys.executable, "-m", "imgctl", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def validate(project: Path, text: str | bytes, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    path = project / "imgctl.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return run_main(["validate", "-c", str(path)], capsys)


LONG_TAG = "a" * 129

# (config text, fragments stderr must hold). A fragment "imgctl.yaml:L:C: path" pins the field and its position.
BROKEN = [
    pytest.param(
        "namespace: acme\nimages:\n  - name: app\n    tags: [latest}\n",
        ["imgctl.yaml:4:18: YAML syntax error", "expected ',' or ']'"],
        id="yaml-syntax-error",
    ),
    pytest.param(
        "namespace: acme\nimages:\n  - name: app\n    context: app\n    name: other\n",
        ["imgctl.yaml:5:5: YAML syntax error: duplicate key 'name' (first defined on line 3)"],
        id="duplicate-yaml-key",
    ),
    pytest.param("", ["imgctl.yaml: config file is empty"], id="empty-file"),
    pytest.param("  \n\n", ["imgctl.yaml: config file is empty"], id="blank-file"),
    pytest.param("# only a comment\n", ["imgctl.yaml: config file holds no document"], id="comment-only-file"),
    pytest.param(
        b"namespace: acme\nimages:\n  - name: caf\xe9\n",
        ["imgctl.yaml:3: not valid UTF-8", "save the file as UTF-8"],
        id="not-utf8",
    ),
    pytest.param("- name: app\n  context: app\n", ["the config must be a mapping"], id="top-level-list"),
    pytest.param("just a string\n", ["the config must be a mapping"], id="top-level-scalar"),
    pytest.param(
        "namspace: acme\nimages:\n  - name: app\n    context: app\n",
        ["imgctl.yaml:1:1: namspace: unknown key 'namspace'; did you mean 'namespace'?"],
        id="unknown-top-level-key",
    ),
    pytest.param(
        "namespace: acme\nimages:\n  - name: app\n    contxt: app\n",
        ["imgctl.yaml:4:5: images[0].contxt: unknown key 'contxt'; did you mean 'context'?"],
        id="unknown-image-key",
    ),
    pytest.param(
        "namespace: acme\nimages:\n  - name: app\n    context: app\n    tags:\n      - {tag: x, floating: true, flaoting: 1}\n",
        ["imgctl.yaml:6:34: images[0].tags[0].flaoting: unknown key 'flaoting'; did you mean 'floating'?"],
        id="unknown-tagspec-key",
    ),
    pytest.param("namespace: acme\n", ["images: required key is missing"], id="missing-images"),
    pytest.param(
        "namespace: acme\nimages:\n  - name: app\n    context: app\n  - context: app\n    tags: [x]\n",
        ["imgctl.yaml:5:5: images[1].name: required key is missing"],
        id="image-without-name",
    ),
    pytest.param(
        "namespace: acme\nimages: []\n",
        ["imgctl.yaml:2:9: images: List should have at least 1 item"],
        id="empty-images",
    ),
    pytest.param(
        "namespace: acme\nimages:\n  - name: app\n    context: app\n  - name: MyApp\n    context: app\n",
        ["imgctl.yaml:5:11: images[1].name: 'MyApp' is not a valid repository name"],
        id="uppercase-image-name",
    ),
    pytest.param(
        'namespace: acme\nimages:\n  - name: "app\\n"\n    context: app\n',
        ["imgctl.yaml:3:11: images[0].name: 'app\\n' is not a valid repository name"],
        id="image-name-with-trailing-newline",
    ),
    pytest.param(
        f"namespace: acme\nimages:\n  - name: app\n    context: app\n    tags:\n      - latest\n      - {LONG_TAG}\n",
        [f"imgctl.yaml:7:9: images[0].tags[1]: '{LONG_TAG}' is not a valid Docker tag"],
        id="tag-too-long",
    ),
    pytest.param(
        'namespace: acme\nimages:\n  - name: app\n    context: app\n  - name: web\n    context: app\n    tags: ["v1+beta"]\n',
        ["imgctl.yaml:7:12: images[1].tags[0]: 'v1+beta' is not a valid Docker tag"],
        id="tag-bad-characters",
    ),
    pytest.param(
        'namespace: acme\nimages:\n  - name: app\n    context: app\n    tags: [latest, ".hidden", "café"]\n',
        ["images[0].tags[1]: '.hidden' is not a valid Docker tag", "images[0].tags[2]: 'café' is not a valid Docker tag"],
        id="tag-leading-dot-and-non-ascii",
    ),
    pytest.param(
        'namespace: acme\nimages:\n  - name: app\n    context: app\n    tags: ["v {version}"]\n',
        ["imgctl.yaml:5:12: images[0].tags[0]: 'v {version}' is not a valid Docker tag"],
        id="templated-tag-bad-literal",
    ),
    pytest.param(
        'namespace: acme\nimages:\n  - name: app\n    context: app\n    tags: [latest, "{vers}"]\n',
        ["imgctl.yaml:5:20: images[0].tags[1]: unknown variable {vers}", "known variables: version"],
        id="unknown-variable-in-tag",
    ),
    pytest.param(
        "namespace: acme\nimages:\n  - name: app\n    context: app\n    build_args:\n"
        '      BASE: "{registry}/{nmspace}/base"\n',
        ["imgctl.yaml:6:13: images[0].build_args.BASE: unknown variable {nmspace}"],
        id="unknown-variable-in-build-arg",
    ),
    pytest.param(
        'namespace: acme\nimages:\n  - name: app\n    context: app\n    tags: ["{version"]\n',
        ["imgctl.yaml:5:12: images[0].tags[0]: malformed template '{version'"],
        id="malformed-template",
    ),
    pytest.param(
        'nightly_tags: [nightly, "{when}"]\nnamespace: acme\nimages:\n  - name: app\n    context: app\n',
        ["imgctl.yaml:1:25: nightly_tags[1]: unknown variable {when}"],
        id="unknown-variable-in-nightly-tag",
    ),
    pytest.param(
        "namespace: acme\nimages:\n  - name: app\n    context: app\n  - name: app\n    context: base\n",
        ["imgctl.yaml:5:11: images[1].name: duplicate image name 'app'"],
        id="duplicate-image-names",
    ),
    pytest.param(
        "namespace: acme\nimages:\n  - name: app\n    context: app\n    depends_on: [base, db]\n"
        "  - name: base\n    context: base\n",
        ["imgctl.yaml:5:24: images[0].depends_on[1]: unknown image 'db'; images: app, base"],
        id="unknown-depends-on",
    ),
    pytest.param(
        "namespace: acme\nimages:\n  - name: a\n    context: app\n    depends_on: [b]\n"
        "  - name: b\n    context: app\n    depends_on: [a]\n",
        ["imgctl.yaml:5:5: images[0].depends_on: dependency cycle: a -> b -> a"],
        id="dependency-cycle",
    ),
    pytest.param(
        "namespace: acme\nimages:\n  - name: app\n    context: nope\n",
        ["imgctl.yaml:4:14: images[0].context: context folder 'nope' does not exist"],
        id="context-missing",
    ),
    pytest.param(
        "namespace: acme\nimages:\n  - name: app\n    context: notes.txt\n",
        ["imgctl.yaml:4:14: images[0].context: context 'notes.txt' is a file; it must be a folder"],
        id="context-is-a-file",
    ),
    pytest.param(
        "namespace: acme\nimages:\n  - name: app\n    context: app\n    dockerfile: Dockerfile.prod\n",
        ["imgctl.yaml:5:17: images[0].dockerfile: Dockerfile 'Dockerfile.prod' not found in context 'app'"],
        id="dockerfile-missing",
    ),
    pytest.param(
        "namespace: acme\npassword: hunter2\nimages:\n  - name: app\n    context: app\n",
        ["imgctl.yaml:2:1: password: secrets never go in the config file", "auth.password_env"],
        id="password-top-level",
    ),
    pytest.param(
        "namespace: acme\nauth:\n  username_env: HUB_USER\n  password: hunter2\nimages:\n  - name: app\n    context: app\n",
        ["imgctl.yaml:4:3: auth.password: secrets never go in the config file", "auth.password_env"],
        id="password-under-auth",
    ),
    pytest.param(
        "namespace: acme\nauth:\n  password_env: ghp_abc-123\nimages:\n  - name: app\n    context: app\n",
        ["imgctl.yaml:3:17: auth.password_env: must be the NAME of an environment variable"],
        id="password-env-not-a-name",
    ),
    pytest.param(
        "registry: https://ghcr.io\nnamespace: acme\nimages:\n  - name: app\n    context: app\n",
        ["imgctl.yaml:1:11: registry: 'https://ghcr.io' is not a registry host[:port] (no scheme, no path)"],
        id="registry-with-scheme",
    ),
    pytest.param(
        "registries:\n  - url: ghcr.io/acme\nimages:\n  - name: app\n    context: app\n",
        ["imgctl.yaml:2:10: registries[0].url: 'ghcr.io/acme' is not a registry host[:port]"],
        id="registry-with-path",
    ),
    pytest.param(
        "images:\n  - name: app\n    context: app\n",
        ["registry: Docker Hub needs a `namespace`"],
        id="docker-hub-without-namespace",
    ),
    pytest.param(
        "registries:\n  - url: ghcr.io\n    namespace: acme\n  - url: docker.io\nimages:\n  - name: app\n    context: app\n",
        ["imgctl.yaml:4:5: registries[1]: Docker Hub needs a `namespace`"],
        id="docker-hub-without-namespace-in-registries",
    ),
    pytest.param(
        "namespace: acme\nimages:\n  - name: app\n    context: app\n    build_args:\n      PYTHON: 1.10\n",
        ["imgctl.yaml:6:15: images[0].build_args.PYTHON: a number with a decimal point loses digits", "in quotes"],
        id="float-build-arg",
    ),
    pytest.param(
        "namespace: acme\nimages:\n  - name: app\n    context: app\n    tags: [1.10]\n",
        ["imgctl.yaml:5:12: images[0].tags[0]: a number with a decimal point loses digits"],
        id="float-tag",
    ),
    pytest.param(
        "registry: ghcr.io\nregistries:\n  - url: ghcr.io\n    namespace: acme\nimages:\n  - name: app\n    context: app\n",
        ["imgctl.yaml:2:1: registries: use either `registries:` or `registry`/`namespace`/`auth`, not both"],
        id="registries-with-registry",
    ),
    pytest.param(
        "registries:\n  - name: ghcr\n    url: ghcr.io\n    namespace: acme\nimages:\n  - name: app\n    context: app\n"
        "    registries: [ghcr, quay]\n",
        ["imgctl.yaml:8:24: images[0].registries[1]: unknown registry 'quay'; registries: ghcr"],
        id="unknown-image-registry",
    ),
    pytest.param(
        "namespace: acme\n? [a, b]\n: value\nimages:\n  - name: app\n    context: app\n",
        ["imgctl.yaml:2:3: YAML syntax error: a key must be a plain value"],
        id="list-as-key",
    ),
    pytest.param(
        "namespace: acme\n1: one\nimages:\n  - name: app\n    context: app\n",
        ["imgctl.yaml:2:1: 1: Keys should be strings"],
        id="number-as-key",
    ),
    pytest.param(
        "namespace: acme\nimages:\n  - name: app\n    context: app\n---\nnamespace: other\n",
        ["imgctl.yaml:5:1: YAML syntax error"],
        id="two-documents",
    ),
    pytest.param(
        "namespace: acme\nimages:\n  - name: app\n    context: app\n    secrets:\n      tok: {value: hunter2}\n",
        ["imgctl.yaml:6:13: images[0].secrets.tok.value: unknown key 'value': a secret's value never goes in the config"],
        id="secret-value-in-config",
    ),
    pytest.param(
        "namespace: acme\nimages:\n  - name: app\n    context: app\n    secrets:\n      tok: {env: TOK, file: t.txt}\n",
        ["images[0].secrets.tok: give exactly one of env (a variable's name) or file (a path)"],
        id="secret-env-and-file",
    ),
    pytest.param(
        "namespace: acme\nimages:\n  - name: app\n    context: app\n    ssh: [{a: /x, b: /y}]\n",
        ["imgctl.yaml:5:10: images[0].ssh: each entry is `default`, an id, or one {id: path of an agent's socket}"],
        id="ssh-entry-with-two-agents",
    ),
    pytest.param(
        "namespace: acme\nimages:\n  - name: app\n    context: app\nbuilder: kaniko\n",
        ["builder: Input should be 'auto', 'classic' or 'buildkit'"],
        id="unknown-builder",
    ),
    pytest.param(
        "namespace: acme\nimages:\n  - name: app\n    context: app\nretry:\n  window: -1\n",
        ["imgctl.yaml:6:11: retry.window: Input should be greater than or equal to 0"],
        id="retry-window-negative",
    ),
    pytest.param(
        "namespace: acme\nimages:\n  - name: app\n    context: app\nretry:\n  window: 4000\n",
        ["imgctl.yaml:6:11: retry.window: Input should be less than or equal to 3600"],
        id="retry-window-too-long",
    ),
    pytest.param(
        "namespace: acme\nimages:\n  - name: app\n    context: app\nretry: {window: soon}\n",
        ["imgctl.yaml:5:17: retry.window: Input should be a valid number"],
        id="retry-window-not-a-number",
    ),
    pytest.param(
        "namespace: acme\nimages:\n  - name: app\n    context: app\nretry: {window: yes}\n",
        ["imgctl.yaml:5:17: retry.window: must be a number of seconds, e.g. 90"],
        id="retry-window-boolean",
    ),
    pytest.param(
        "namespace: acme\nimages:\n  - name: app\n    context: app\nretry: {window: .inf}\n",
        ["imgctl.yaml:5:17: retry.window: Input should be a finite number"],
        id="retry-window-infinite",
    ),
    pytest.param(
        "namespace: acme\nimages:\n  - name: app\n    context: app\nretry: {windw: 30}\n",
        ["imgctl.yaml:5:9: retry.windw: unknown key 'windw'; did you mean 'window'?"],
        id="retry-unknown-key",
    ),
    pytest.param(
        "namespace: acme\nimages:\n  - name: app\n    context: app\nretry: 90\n",
        ["imgctl.yaml:5:8: retry: must be a mapping, e.g. `retry: {window: 90}` (seconds)"],
        id="retry-not-a-mapping",
    ),
]


def test_self_dependency_is_reported_once(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = "namespace: acme\nimages:\n  - name: app\n    context: app\n    depends_on: [app]\n"
    code, _, err = validate(project, text, capsys)
    assert code == 2
    assert "(1 problem)" in err
    assert "imgctl.yaml:5:18: images[0].depends_on[0]: an image cannot depend on itself" in err


def chain_text(count: int, *, cycle: bool) -> str:
    """`count` images, each depending on the next one listed (dependents first); with `cycle`,
    the last depends on the first."""
    lines = ["namespace: acme", "images:"]
    for i in range(count):
        lines += [f"  - name: i{i}", "    context: app"]
        if cycle or i + 1 < count:
            lines.append(f"    depends_on: [i{(i + 1) % count}]")
    return "\n".join(lines) + "\n"


def test_builder_must_be_classic_or_buildkit(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = validate(project, VALID + "builder: kit\n", capsys)
    assert code == 2
    assert "builder" in err and "classic" in err and "buildkit" in err, err
    code, _, err = validate(project, VALID + "builder: buildkit\n", capsys)
    assert (code, err) == (0, "")


@pytest.mark.parametrize(("text", "window"), [("", 90.0), ("retry: {}\n", 90.0), ("retry: {window: 0}\n", 0.0),
                                              ("retry:\n  window: 12.5\n", 12.5)])
def test_retry_window_is_read_from_the_config(project: Path, text: str, window: float) -> None:
    path = project / "imgctl.yaml"
    path.write_text(VALID + text)
    assert load_config(path).config.retry.window == window


def test_the_retry_window_is_in_the_schema() -> None:
    from imgctl.config import Config

    retry = Config.model_json_schema()["$defs"]["RetryConfig"]["properties"]["window"]
    assert retry["default"] == 90 and retry["minimum"] == 0 and retry["maximum"] == 3600


def test_a_long_chain_listed_dependents_first_is_valid(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Cycle detection walks the graph with its own stack: 3,000 levels deep is no RecursionError."""
    code, out, err = validate(project, chain_text(3000, cycle=False), capsys)
    assert (code, err) == (0, ""), err[-2000:]
    assert "valid (3000 images)" in out


def test_a_long_cycle_is_reported_whole(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = validate(project, chain_text(3000, cycle=True), capsys)
    assert code == 2, err[-2000:]
    cycle = err.split("dependency cycle: ", 1)[1].splitlines()[0].split(" -> ")
    assert len(cycle) == 3001 and cycle[0] == cycle[-1] and len(set(cycle)) == 3000


@pytest.mark.parametrize(("text", "fragments"), BROKEN)
def test_broken_config_is_refused_with_exit_2(
    project: Path, capsys: pytest.CaptureFixture[str], text: str | bytes, fragments: list[str]
) -> None:
    code, out, err = validate(project, text, capsys)
    assert code == 2, err
    assert "Traceback" not in out + err
    assert "unexpected error" not in err
    assert out == ""
    assert err.startswith("error: ")
    for fragment in fragments:
        assert fragment in err


def test_every_problem_is_reported_at_once(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (
        "namespace: acme\nimages:\n  - name: app\n    context: app\n    tags: [latest, 'a b', '{nope}']\n"
        "  - name: Web\n    context: app\n    build_args: {V: 1.5}\n"
    )
    code, _, err = validate(project, text, capsys)
    assert code == 2
    assert "(4 problems)" in err
    for where in ("images[0].tags[1]", "images[0].tags[2]", "images[1].name", "images[1].build_args.V"):
        assert f"{where}: " in err


def test_one_error_per_bad_tag_entry(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A tag is a string or a {tag, floating} mapping: a bad one gets the error of its own shape only.
    text = "namespace: acme\nimages:\n  - name: app\n    context: app\n    tags: [[x], {tag: x, floating: maybe}]\n"
    code, _, err = validate(project, text, capsys)
    assert code == 2
    assert "(2 problems)" in err
    assert "images[0].tags[0]: Input should be a valid string" in err
    assert "images[0].tags[1].floating: Input should be a valid boolean" in err
    assert "TagSpec" not in err


def test_secret_value_is_never_echoed(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = "namespace: acme\nauth:\n  token: s3cr3t-Value\nimages:\n  - name: app\n    context: app\n"
    code, out, err = validate(project, text, capsys)
    assert code == 2
    assert "auth.token: secrets never go in the config file" in err
    assert "s3cr3t-Value" not in out + err


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["validate", "-c", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2
    assert "config file not found" in err and "nope.yaml" in err


def test_config_path_is_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["validate", "-c", str(tmp_path)], capsys)
    assert code == 2
    assert "is a directory" in err


def test_valid_config_passes(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = validate(project, VALID, capsys)
    assert (code, err) == (0, "")
    assert "valid (2 images)" in out


def test_valid_config_loads_with_defaults(project: Path) -> None:
    path = project / "imgctl.yaml"
    path.write_text(VALID)
    loaded = load_config(path)
    config = loaded.config
    assert loaded.base_dir == project.resolve()
    assert [i.name for i in config.images] == ["base", "app"]
    assert config.images[0].tags == ["{version}"]
    assert config.nightly_tags == ["nightly", "nightly-{date}"]
    assert config.images[1].tags[3].floating is True
    [target] = config.targets()
    assert (target.url, target.namespace, target.auth.password_env) == ("ghcr.io", "acme", "DOCKERHUB_TOKEN")


def test_scalars_become_strings(project: Path) -> None:
    path = project / "imgctl.yaml"
    path.write_text(
        "namespace: acme\nimages:\n  - name: app\n    context: app\n    tags: [2024]\n"
        "    build_args: {DEBUG: true, PORT: 8080}\n"
    )
    image = load_config(path).config.images[0]
    assert image.tags == ["2024"]
    assert image.build_args == {"DEBUG": "true", "PORT": "8080"}


def test_real_entry_point_valid_and_invalid(project: Path) -> None:
    (project / "imgctl.yaml").write_text(VALID)
    done = run_module(["validate", "-c", "imgctl.yaml"], project)
    assert done.returncode == 0, done.stderr
    assert "valid (2 images)" in done.stdout

    (project / "bad.yaml").write_text("namespace: acme\nimages:\n  - name: app\n    tags: [latest}\n")
    done = run_module(["validate", "-c", "bad.yaml"], project)
    assert done.returncode == 2
    assert "bad.yaml:4:18: YAML syntax error" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_deeply_nested_yaml_is_refused_quickly(project: Path) -> None:
    depth = 10_000
    (project / "deep.yaml").write_text("namespace: acme\nimages: " + "[" * depth + "]" * depth + "\n")
    started = time.monotonic()
    done = run_module(["validate", "-c", "deep.yaml"], project)
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    # Ours ("nested more than 64 levels deep"), or libyaml's own limit where the C scanner reads ahead
    # (PyYAML 6.0.4: "exceeded maximum nesting depth"); either way a position and exit 2.
    assert "deep.yaml:2:" in done.stderr and "nest" in done.stderr
    assert elapsed < 5


def test_deeply_nested_block_yaml_is_refused(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = "images:\n" + "".join("  " * level + "-\n" for level in range(1, 3000))
    code, _, err = validate(project, text, capsys)
    assert code == 2
    assert "nested" in err


def test_alias_bomb_is_refused_quickly(project: Path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 10):
        prev, cur = chr(ord("a") + level - 1), chr(ord("a") + level)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    lines.append("images: *j")
    (project / "bomb.yaml").write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    done = run_module(["validate", "-c", "bomb.yaml"], project)
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "expands to more than" in done.stderr
    assert elapsed < 5


def test_self_referencing_alias_is_refused(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = validate(project, "namespace: acme\nimages: &loop [*loop]\n", capsys)
    assert code == 2
    assert "expands to more than" in err


def test_schema_prints_json_schema(project: Path) -> None:
    done = run_module(["schema"], project)
    assert done.returncode == 0, done.stderr
    schema = json.loads(done.stdout)
    assert schema["type"] == "object"
    assert "images" in schema["required"]
    assert {"registry", "namespace", "auth", "registries", "images", "nightly_tags"} <= set(schema["properties"])


# --- discovery: -c, then $IMGCTL_CONFIG, then ./imgctl.yaml, then ./config/imgctl.yaml -------------------


@pytest.fixture
def places(tmp_path: Path) -> Path:
    (tmp_path / "config").mkdir()
    for path in ("explicit.yaml", "from-env.yaml", "imgctl.yaml", "config/imgctl.yaml"):
        (tmp_path / path).write_text("x: 1\n")
    return tmp_path


def test_find_config_explicit_wins(places: Path) -> None:
    found = find_config(Path("explicit.yaml"), cwd=places, environ={"IMGCTL_CONFIG": "from-env.yaml"})
    assert found == Path("explicit.yaml")


def test_find_config_environment_before_files(places: Path) -> None:
    assert find_config(None, cwd=places, environ={"IMGCTL_CONFIG": "from-env.yaml"}) == Path("from-env.yaml")


def test_find_config_empty_environment_value_is_ignored(places: Path) -> None:
    assert find_config(None, cwd=places, environ={"IMGCTL_CONFIG": ""}) == places / "imgctl.yaml"


def test_find_config_imgctl_yaml_before_config_folder(places: Path) -> None:
    assert find_config(None, cwd=places, environ={}) == places / "imgctl.yaml"


def test_find_config_config_folder(places: Path) -> None:
    (places / "imgctl.yaml").unlink()
    assert find_config(None, cwd=places, environ={}) == places / "config" / "imgctl.yaml"


def test_find_config_a_folder_named_imgctl_yaml_is_skipped(places: Path) -> None:
    (places / "imgctl.yaml").unlink()
    (places / "imgctl.yaml").mkdir()
    assert find_config(None, cwd=places, environ={}) == places / "config" / "imgctl.yaml"


def test_find_config_none(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        find_config(None, cwd=tmp_path, environ={})
    assert "no config file found" in raised.value.message
    assert "-c FILE" in raised.value.hint and "$IMGCTL_CONFIG" in raised.value.hint


def _discovery_project(root: Path, where: str, image: str) -> None:
    folder = (root / where).parent
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ctx").mkdir(exist_ok=True)
    (folder / "ctx" / "Dockerfile").write_text("FROM alpine\n")
    (root / where).write_text(f"namespace: acme\nimages:\n  - name: {image}\n    context: ctx\n")


def test_cli_discovery_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IMGCTL_CONFIG", raising=False)

    code, _, err = run_main(["validate"], capsys)
    assert code == 2
    assert "no config file found" in err and "hint: Pass -c FILE" in err

    _discovery_project(tmp_path, "config/imgctl.yaml", "one")
    code, out, _ = run_main(["validate"], capsys)
    assert (code, out.split(":")[0]) == (0, str(tmp_path / "config" / "imgctl.yaml"))

    _discovery_project(tmp_path, "imgctl.yaml", "two")
    code, out, _ = run_main(["validate"], capsys)
    assert (code, out.split(":")[0]) == (0, str(tmp_path / "imgctl.yaml"))

    _discovery_project(tmp_path, "env/imgctl.yaml", "three")
    monkeypatch.setenv("IMGCTL_CONFIG", str(tmp_path / "env" / "imgctl.yaml"))
    code, out, _ = run_main(["validate"], capsys)
    assert (code, out.split(":")[0]) == (0, str(tmp_path / "env" / "imgctl.yaml"))

    _discovery_project(tmp_path, "flag/imgctl.yaml", "four")
    code, out, _ = run_main(["validate", "-c", str(tmp_path / "flag" / "imgctl.yaml")], capsys)
    assert (code, out.split(":")[0]) == (0, str(tmp_path / "flag" / "imgctl.yaml"))


def test_cli_environment_naming_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _discovery_project(tmp_path, "imgctl.yaml", "app")
    monkeypatch.setenv("IMGCTL_CONFIG", str(tmp_path / "gone.yaml"))
    code, _, err = run_main(["validate"], capsys)
    assert code == 2
    assert "config file not found" in err and "gone.yaml" in err


# --- the quick YAML reader against the strict one ---------------------------------------------------

# The quick reader builds the data from libyaml's events with no node tree; whatever it does not take
# goes to the strict reader (PyYAML's node tree, every check). Both must give the same data.
SAME_DATA = [
    VALID,
    "a: 1\nb: 1.5\nc: 0x1f\nd: 0o17\ne: -3\nf: .inf\ng: ~\nh: null\ni: ''\nj: yes\nk: No\nl: true\n",
    "when: 2024-05-06\nstamp: 2024-05-06T07:08:09Z\nbin: !!binary aGVsbG8=\nforced: !!str 1.10\nplain: !!int '7'\n",
    "quoted: '1.10'\ndouble: \"a\\tb\"\nblock: |\n  two\n  lines\nfolded: >\n  one\n  line\nunicode: héllo ✓\n",
    "base: &b {context: ., tags: [x, y]}\nimages: [*b, *b, {name: z}]\nsame: *b\nscalar: &s text\nagain: *s\n",
    "nested: [[1, [2, [3, {a: [4]}]]], {}, []]\nempty:\nlist:\n- \n- a\n",
    "1: int key\n1.5: float key\nnull: null key\n2024-01-02: date key\n",
    "---\na: 1\n...\n",
    "!!map {a: !!seq [1, 2]}\n",
]


@pytest.mark.parametrize("text", SAME_DATA)
def test_quick_yaml_reader_reads_what_the_strict_one_reads(text: str) -> None:
    from imgctl.yamlload import _read_plain, _read_strict

    assert _read_plain(text) == _read_strict(text, Path("x.yaml"))[0]


LEFT_TO_THE_STRICT_READER = [
    "a: 1\na: 2\n",  # duplicate key
    "1: a\ntrue: b\n",  # equal keys
    "? [a]\n: b\n",  # a key that is a list
    "base: &b {a: 1}\nuse:\n  <<: *b\n",  # merge keys: the strict reader refuses them
    "a: !!set {x, y}\n",
    "a: !!omap [x: 1]\n",
    "a: !custom 1\n",
    "a: *nowhere\n",
    "a: &x [*x]\n",  # an alias inside its own anchor
    "a: &x 1\nb: &x 2\n",  # an anchor defined twice
    "a: 1\n---\nb: 2\n",  # two documents
    "# only a comment\n",
    "a: [1, 2\n",  # a syntax error
    "a: " + "[" * 65 + "]" * 65 + "\n",  # deeper than MAX_DEPTH
]


@pytest.mark.parametrize("text", LEFT_TO_THE_STRICT_READER)
def test_quick_yaml_reader_leaves_the_unusual_to_the_strict_one(text: str) -> None:
    from imgctl.yamlload import _read_plain

    with pytest.raises(Exception):
        _read_plain(text)


def test_quick_yaml_reader_counts_aliases_expanded(tmp_path: Path) -> None:
    """The alias-bomb limit holds on the quick path too, to the node: MAX_NODES is read, one more is not."""
    from imgctl.yamlload import MAX_NODES, _read_plain, _read_strict

    def text(fill: int) -> str:
        return "\n".join([
            "a: &a [" + ", ".join(["x"] * 99) + "]",  # 100 nodes
            "b: &b [" + ", ".join(["*a"] * 100) + "]",  # 10,001
            "c: [" + ", ".join(["*b"] * 18) + "]",  # 180,019
            "d: [" + ", ".join(["x"] * fill) + "]",  # 1 + fill; with the root and 4 keys, 190,126 + fill in all
        ]) + "\n"

    at_limit = text(MAX_NODES - 190_126)
    assert _read_plain(at_limit) == _read_strict(at_limit, tmp_path / "x.yaml")[0]
    with pytest.raises(Exception):
        _read_plain(text(MAX_NODES - 190_126 + 1))
    with pytest.raises(ConfigError, match="expands to more than"):
        _read_strict(text(MAX_NODES - 190_126 + 1), tmp_path / "x.yaml")


def test_errors_of_a_large_valid_yaml_still_name_line_and_column(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Positions are composed only for an error, and then they are right, deep in a long file."""
    lines = ["namespace: acme", "images:"]
    for i in range(2000):
        lines += [f"  - name: i{i}", "    context: app", "    tags: ['{version}', latest]"]
    lines[2 + 3 * 1500 + 2] = "    tags: ['{version}', 'bad tag']"
    code, _, err = validate(project, "\n".join(lines) + "\n", capsys)
    assert code == 2
    assert f"imgctl.yaml:{3 + 3 * 1500 + 2}:" in err and "images[1500].tags[1]" in err, err
