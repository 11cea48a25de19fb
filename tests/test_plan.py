"""The planner: config + facts + options -> an ordered plan, with Dockerfiles read through a stub."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from imgctl.cli import main
from imgctl.config import Config, LoadedConfig
from imgctl.errors import ConfigError, UsageError
from imgctl.facts import Facts, parse_version
from imgctl.plan import OCI, Options, Plan, make_plan

SHA = "0123456789abcdef0123456789abcdef01234567"
NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)


def facts(version: str | None = "1.2.3", *, branch: str | None = "main", sha: str | None = SHA) -> Facts:
    return Facts(
        version=parse_version(version) if version else None,
        version_source="--version" if version else None,
        git_sha=sha,
        branch=branch,
        source_url="https://github.com/acme/widgets",
        now=NOW,
    )


def loaded(data: dict[str, Any], root: Path = Path("/project")) -> LoadedConfig:
    data = {"registry": "ghcr.io", "namespace": "acme", **data}
    return LoadedConfig(config=Config.model_validate(data), path=root / "imgctl.yaml")


def reader(dockerfiles: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """Dockerfiles by context folder name; FROM alpine for any other."""
    dockerfiles = dockerfiles or {}
    read: list[Path] = []

    def read_text(path: Path) -> str:
        read.append(path)
        return dockerfiles.get(path.parent.name, "FROM alpine:3.20\n")

    read_text.read = read  # type: ignore[attr-defined]
    return read_text


def plan_of(data: dict[str, Any], the_facts: Facts | None = None, options: Options | None = None,
            dockerfiles: dict[str, str] | None = None) -> Plan:
    return make_plan(loaded(data), the_facts or facts(), options or Options(), reader(dockerfiles))


def tags(plan: Plan, name: str) -> list[str]:
    return [t.tag for t in plan.image(name).tags]


def image(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "context": name, **extra}


# --- templates -----------------------------------------------------------------------------------------


def test_every_template_variable_renders() -> None:
    everything = "|".join(f"{{{n}}}" for n in (
        "version", "major", "minor", "patch", "git_sha", "git_short_sha", "branch", "date", "registry", "namespace", "name"
    ))
    plan = plan_of({"images": [image("app", build_args={"ALL": everything}, labels={"all": everything})]},
                   facts("1.2.3-rc.4", branch="feature/x"))
    expected = f"1.2.3-rc.4|1|2|3|{SHA}|0123456|feature/x|20240506|ghcr.io|acme|app"
    app = plan.image("app")
    assert app.build_args == {"ALL": expected}
    assert app.labels["all"] == expected


def test_every_tag_variable_renders() -> None:
    templates = ["{version}", "v{major}", "{major}.{minor}", "p{patch}", "{git_sha}", "sha-{git_short_sha}",
                 "{branch}", "{date}", "{name}-{namespace}"]
    plan = plan_of({"images": [image("app", tags=templates)]})
    assert tags(plan, "app") == ["1.2.3", "v1", "1.2", "p3", SHA, "sha-0123456", "main", "20240506", "app-acme"]


def test_registry_and_namespace_come_from_each_target() -> None:
    plan = plan_of({
        "registry": "docker.io", "namespace": "",
        "registries": [{"name": "ghcr", "url": "ghcr.io", "namespace": "acme"},
                       {"name": "hub", "url": "docker.io", "namespace": "acmehub"}],
        "images": [image("app", tags=["{namespace}-{version}"], build_args={"REG": "{registry}/{namespace}"})],
    })
    assert tags(plan, "app") == ["acme-1.2.3", "acmehub-1.2.3"]
    assert plan.image("app").build_args == {"REG": "ghcr.io/acme"}  # build args: the first registry


def test_missing_version_says_to_pass_version() -> None:
    with pytest.raises(UsageError) as raised:
        plan_of({"images": [image("app", tags=["{major}.{minor}"])]}, facts(None))
    assert "images[0].tags[0]" in raised.value.message
    assert "--version" in raised.value.hint


def test_missing_version_in_build_arg_names_it() -> None:
    with pytest.raises(UsageError) as raised:
        plan_of({"images": [image("app", tags=["latest"], build_args={"V": "{version}"})]}, facts(None))
    assert "images[0].build_args.V" in raised.value.message
    assert "--version" in raised.value.hint


@pytest.mark.parametrize(("variable", "hint"), [("git_sha", "GITHUB_SHA"), ("branch", "GITHUB_REF_NAME")])
def test_missing_git_fact_names_its_source(variable: str, hint: str) -> None:
    with pytest.raises(UsageError) as raised:
        plan_of({"images": [image("app", tags=[f"{{{variable}}}"])]}, facts(sha=None, branch=None))
    assert hint in raised.value.hint


def test_cli_plan_without_version_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("GITHUB_") or name == "SOURCE_DATE_EPOCH":
            monkeypatch.delenv(name)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # no git repository around it
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "Dockerfile").write_text("FROM alpine\n")
    config = tmp_path / "imgctl.yaml"
    config.write_text("namespace: acme\nimages:\n  - name: app\n    context: app\n")
    with pytest.raises(SystemExit) as exited:
        main(["plan", "-c", str(config)])
    out, err = capsys.readouterr()
    assert exited.value.code == 2
    assert "Traceback" not in out + err
    assert "images[0].tags[0]" in err and "hint: pass --version" in err

    with pytest.raises(SystemExit) as exited:
        main(["plan", "-c", str(config), "--version", "v1.2.3"])
    out, err = capsys.readouterr()
    assert exited.value.code == 0, err
    assert "docker.io/acme/app:1.2.3" in out


def test_rendered_tag_that_is_not_a_tag_is_refused() -> None:
    with pytest.raises(ConfigError, match="not a valid Docker tag"):
        plan_of({"registry": "localhost:5000", "images": [image("app", tags=["{registry}"])]})


def test_branch_is_sanitised_in_tags_only() -> None:
    plan = plan_of({"images": [image("app", tags=["{branch}", "pr-{branch}"], build_args={"B": "{branch}"})]},
                   facts(branch="feature/Big fix"))
    assert tags(plan, "app") == ["feature-Big-fix", "pr-feature-Big-fix"]
    assert plan.image("app").build_args == {"B": "feature/Big fix"}


def test_same_tag_twice_is_planned_once() -> None:
    plan = plan_of({"images": [image("app", tags=["{version}", "{major}.{minor}.{patch}", "latest"])]})
    assert tags(plan, "app") == ["1.2.3", "latest"]


def test_repository_too_long_is_refused_for_any_registry() -> None:
    with pytest.raises(ConfigError, match="longer than 255"):
        plan_of({
            "registry": "docker.io", "namespace": "",
            "registries": [{"name": "long", "url": "registry." + "a" * 240 + ".example", "namespace": "acme"},
                           {"name": "short", "url": "ghcr.io", "namespace": "acme"}],
            "images": [image("app")],
        })


# --- immutable and floating --------------------------------------------------------------------------


@pytest.mark.parametrize(("template", "floating"), [
    ("{version}", False),
    ("v{version}-alpine", False),
    ("{git_sha}", False),
    ("sha-{git_short_sha}", False),
    ("{date}", False),
    ("{branch}-{date}", False),
    ("latest", True),
    ("stable", True),
    ("{major}", True),
    ("{major}.{minor}", True),
    ("{branch}", True),
    ("{name}", True),
])
def test_tag_classification(template: str, floating: bool) -> None:
    [tag] = plan_of({"images": [image("app", tags=[template])]}).image("app").tags
    assert tag.floating is floating


def test_tag_spec_overrides_classification_both_ways() -> None:
    plan = plan_of({"images": [image("app", tags=[
        {"tag": "{version}", "floating": True},
        {"tag": "stable", "floating": False},
    ])]})
    app = plan.image("app")
    assert [t.tag for t in app.floating_tags] == ["1.2.3"]
    assert [t.tag for t in app.immutable_tags] == ["stable"]


def test_prerelease_holds_back_every_floating_tag() -> None:
    plan = plan_of(
        {"images": [image("app", tags=["{version}", "{major}.{minor}", "latest", "sha-{git_short_sha}",
                                       {"tag": "edge", "floating": False}, {"tag": "rc-{version}", "floating": True}])]},
        facts("2.0.0-rc.1"),
    )
    app = plan.image("app")
    assert [t.tag for t in app.tags] == ["2.0.0-rc.1", "sha-0123456", "edge"]
    assert [t.tag for t in app.held_back] == ["2.0", "latest", "rc-2.0.0-rc.1"]
    assert all(t.floating for t in app.held_back)
    assert plan.prerelease is True
    assert "2.0.0-rc.1" in plan.held_back_reason


def test_release_holds_nothing_back() -> None:
    plan = plan_of({"images": [image("app", tags=["{version}", "latest"])]})
    assert plan.image("app").held_back == ()
    assert (plan.prerelease, plan.held_back_reason) == (False, None)


def test_nightly_uses_nightly_tags_with_todays_date() -> None:
    plan = plan_of({"images": [image("app", tags=["{version}", "latest"])]}, facts(None), Options(nightly=True))
    app = plan.image("app")
    assert [(t.tag, t.floating) for t in app.tags] == [("nightly", True), ("nightly-20240506", False)]
    assert app.labels[OCI + "version"] == "nightly-20240506"


def test_nightly_uses_configured_nightly_tags() -> None:
    plan = plan_of({"nightly_tags": ["edge", "edge-{date}-{git_short_sha}"], "images": [image("app")]},
                   facts(None), Options(nightly=True))
    assert tags(plan, "app") == ["edge", "edge-20240506-0123456"]


# --- order and dependencies ---------------------------------------------------------------------------


def test_order_is_topological_and_otherwise_config_order() -> None:
    plan = plan_of({"images": [
        image("app", depends_on=["lib"]),
        image("tools"),
        image("lib", depends_on=["base"]),
        image("base"),
        image("docs"),
    ]})
    assert [i.name for i in plan.images] == ["tools", "base", "lib", "app", "docs"]
    assert plan.image("app").depends_on == ("lib",)


def test_levels() -> None:
    plan = plan_of({"images": [
        image("app", depends_on=["lib", "base"]),
        image("lib", depends_on=["base"]),
        image("base"),
        image("tools"),
    ]})
    assert plan.levels() == [["base", "tools"], ["lib"], ["app"]]


def test_levels_of_independent_images() -> None:
    plan = plan_of({"images": [image("a"), image("b")]})
    assert plan.levels() == [["a", "b"]]


def _first_ready_order(graph: dict[str, list[str]], config_order: list[str]) -> list[str]:
    """The rule, spelled out: again and again, the first image in config order whose dependencies are placed."""
    done: list[str] = []
    placed: set[str] = set()
    remaining = list(config_order)
    while remaining:
        name = next(n for n in remaining if all(d in placed for d in graph[n]))
        done.append(name)
        placed.add(name)
        remaining.remove(name)
    return done


def test_order_and_levels_of_3000_images_listed_in_a_shuffled_order() -> None:
    """3 levels, the edges of the deepest two only in FROM lines (a build arg names the base), the
    images listed in random order: dependencies first, otherwise config order, as the rule says."""
    import random

    names = ["base"] + [f"mid{i}" for i in range(300)] + [f"leaf{i}" for i in range(2699)]
    base_of = {"base": None, **{f"mid{i}": "base" for i in range(300)}, **{f"leaf{i}": f"mid{i % 300}" for i in range(2699)}}
    random.Random(7).shuffle(names)
    images = [
        image(name, context="shared", **({"build_args": {"BASE": f"{{registry}}/{{namespace}}/{base_of[name]}:{{version}}"}}
                                       if base_of[name] else {}))
        for name in names
    ]
    read = reader({"shared": "ARG BASE=scratch\nFROM ${BASE}\n"})
    plan = make_plan(loaded({"images": images}), facts(), Options(), read)
    order = [i.name for i in plan.images]
    assert order == _first_ready_order({n: [base_of[n]] if base_of[n] else [] for n in names}, names)
    assert plan.levels() == [
        ["base"], [n for n in order if n.startswith("mid")], [n for n in order if n.startswith("leaf")]
    ]
    assert all(plan.image(n).depends_on == ((base_of[n],) if base_of[n] else ()) for n in ("base", "mid7", "leaf2698"))
    assert len(read.read) == 1  # one Dockerfile for 3,000 images, read once  # type: ignore[attr-defined]


def test_build_order_puts_the_longest_chain_first() -> None:
    plan = plan_of({"images": [
        image("solo"),
        image("wide"),                                # two images wait on it, one level down
        image("w1", depends_on=["wide"]),
        image("w2", depends_on=["wide"]),
        image("deep"),                                # a chain of two waits on it
        image("d1", depends_on=["deep"]),
        image("d2", depends_on=["d1"]),
    ]})
    order = plan.build_order()
    assert sorted(order, key=order.get) == ["deep", "wide", "d1", "solo", "w1", "w2", "d2"]


def test_build_order_of_independent_images_is_the_config_order() -> None:
    assert plan_of({"images": [image("b"), image("a"), image("c")]}).build_order() == {"b": 0, "a": 1, "c": 2}


DECLARED = {"images": [
    image("app", depends_on=["lib"]),
    image("lib", depends_on=["base"]),
    image("base"),
    image("other"),
]}
UNDECLARED = [image("app"), image("lib"), image("base"), image("other")]
BASE_ARG = "{registry}/{namespace}/%s:{version}"


@pytest.mark.parametrize(("data", "dockerfiles"), [
    pytest.param(
        {"images": UNDECLARED},
        {"app": "FROM ghcr.io/acme/lib:1.2.3\n", "lib": "FROM ghcr.io/acme/base:1.2.3 AS build\nFROM build\n"},
        id="literal-from",
    ),
    pytest.param(
        {"images": UNDECLARED},
        {"app": "ARG REG=ghcr.io\nARG IMAGE=${REG}/acme/lib\nFROM --platform=$BUILDPLATFORM ${IMAGE}:${TAG:-latest}\n",
         "lib": "# syntax=docker/dockerfile:1\nARG BASE=ghcr.io/acme/base:1\nFROM \\\n  $BASE\n"},
        id="arg-defaults",
    ),
    pytest.param(
        {"images": [image("app", build_args={"BASE": BASE_ARG % "lib"}),
                    image("lib", build_args={"BASE": BASE_ARG % "base"}), image("base"), image("other")]},
        {"app": "ARG BASE=alpine\nFROM ${BASE}\n", "lib": "ARG BASE\nFROM $BASE\n"},
        id="templated-build-args",
    ),
    pytest.param(
        {"registry": "docker.io", "images": UNDECLARED},
        {"app": "FROM acme/lib\n", "lib": "FROM index.docker.io/acme/base:latest\n"},
        id="docker-hub-normalised",
    ),
])
def test_dependencies_inferred_from_from_lines(data: dict[str, Any], dockerfiles: dict[str, str]) -> None:
    declared = plan_of({**data, **DECLARED})
    inferred = plan_of(data, dockerfiles=dockerfiles)
    assert [i.name for i in inferred.images] == [i.name for i in declared.images] == ["base", "lib", "app", "other"]
    assert inferred.image("app").depends_on == ("lib",)
    assert inferred.image("app").inferred_from == ("lib",)
    assert inferred.image("lib").inferred_from == ("base",)
    assert inferred.image("other").depends_on == ()
    assert declared.image("app").inferred_from == ()
    assert inferred.levels() == declared.levels() == [["base", "other"], ["lib"], ["app"]]


def test_from_another_registry_is_not_a_dependency() -> None:
    plan = plan_of({"images": [image("app"), image("lib")]},
                   dockerfiles={"app": "FROM docker.io/acme/lib\nFROM ghcr.io/other/lib\nFROM ghcr.io/acme/lib-dev\n"})
    assert plan.image("app").depends_on == ()


def test_from_own_image_is_not_a_dependency() -> None:
    plan = plan_of({"images": [image("app")]}, dockerfiles={"app": "FROM ghcr.io/acme/app:previous\n"})
    assert plan.image("app").depends_on == ()


def test_cycle_through_from_lines_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"dependency cycle \(FROM lines included\): "):
        plan_of({"images": [image("a"), image("b", depends_on=["a"])]},
                dockerfiles={"a": "FROM ghcr.io/acme/b:1\n"})


def test_dockerfile_path_read() -> None:
    read_text = reader()
    make_plan(loaded({"images": [image("app", dockerfile="build/Containerfile")]}), facts(), Options(), read_text)
    assert read_text.read == [Path("/project/app/build/Containerfile")]


# --- --only ------------------------------------------------------------------------------------------


ONLY = {"images": [image("app", depends_on=["lib"]), image("lib", depends_on=["base"]), image("base"), image("tools")]}


def test_only_brings_its_dependencies() -> None:
    plan = plan_of(ONLY, options=Options(only=("app",)))
    assert [i.name for i in plan.images] == ["base", "lib", "app"]
    assert plan.image("app").depends_on == ("lib",)


def test_only_without_dependencies() -> None:
    plan = plan_of(ONLY, options=Options(only=("app", "tools"), with_deps=False))
    assert [i.name for i in plan.images] == ["app", "tools"]
    assert plan.image("app").depends_on == ()
    assert plan.levels() == [["app", "tools"]]


def test_only_unknown_image() -> None:
    with pytest.raises(UsageError, match="--only nope: no such image") as raised:
        plan_of(ONLY, options=Options(only=("app", "nope")))
    assert "app, lib, base, tools" in raised.value.hint


# --- labels ------------------------------------------------------------------------------------------


def test_oci_labels_and_user_labels_win() -> None:
    plan = plan_of({"images": [image("app", labels={OCI + "title": "Widgets", "team": "core"})]})
    assert plan.image("app").labels == {
        OCI + "created": "2024-05-06T07:08:09Z",
        OCI + "revision": SHA,
        OCI + "version": "1.2.3",
        OCI + "source": "https://github.com/acme/widgets",
        OCI + "title": "Widgets",
        "team": "core",
    }


def test_oci_labels_without_git_facts_are_left_out() -> None:
    the_facts = Facts(parse_version("1.0.0"), "--version", None, None, None, NOW)
    labels = make_plan(loaded({"images": [image("app")]}), the_facts, Options(), reader()).image("app").labels
    assert set(labels) == {OCI + "created", OCI + "version", OCI + "title"}


def test_oci_labels_false_drops_them() -> None:
    plan = plan_of({"oci_labels": False, "images": [image("app", labels={"team": "core"})]})
    assert plan.image("app").labels == {"team": "core"}


# --- registries --------------------------------------------------------------------------------------


REGISTRIES = {
    "registry": "docker.io", "namespace": "",
    "registries": [
        {"name": "ghcr", "url": "ghcr.io", "namespace": "acme", "auth": {"username_env": "GH_USER", "password_env": "GH_TOKEN"}},
        {"name": "hub", "url": "docker.io", "namespace": "acme"},
        {"name": "local", "url": "localhost:5000"},
    ],
}


def test_several_registries_give_one_tag_set_each() -> None:
    plan = plan_of(REGISTRIES | {"images": [image("app", tags=["{version}", "latest"])]})
    refs = [(t.target, t.reference, t.api_path) for t in plan.image("app").tags]
    assert refs == [
        ("ghcr", "ghcr.io/acme/app:1.2.3", "acme/app"),
        ("ghcr", "ghcr.io/acme/app:latest", "acme/app"),
        ("hub", "docker.io/acme/app:1.2.3", "acme/app"),
        ("hub", "docker.io/acme/app:latest", "acme/app"),
        ("local", "localhost:5000/app:1.2.3", "app"),
        ("local", "localhost:5000/app:latest", "app"),
    ]
    assert [(t.key, t.host, t.username_env, t.password_env) for t in plan.targets] == [
        ("ghcr", "ghcr.io", "GH_USER", "GH_TOKEN"),
        ("hub", "docker.io", None, None),
        ("local", "localhost:5000", None, None),
    ]


def test_image_registries_select_targets() -> None:
    plan = plan_of(REGISTRIES | {"images": [image("app", registries=["local", "ghcr"])]})
    assert [t.reference for t in plan.image("app").tags] == ["localhost:5000/app:1.2.3", "ghcr.io/acme/app:1.2.3"]


def test_single_registry_shorthand_and_docker_hub_library_path() -> None:
    plan = plan_of({"registry": "docker.io", "namespace": "", "images": [image("app")]})
    [tag] = plan.image("app").tags
    assert (tag.target, tag.reference, tag.api_path) == ("default", "docker.io/app:1.2.3", "library/app")
    [target] = plan.targets
    assert (target.username_env, target.password_env) == ("DOCKERHUB_USERNAME", "DOCKERHUB_TOKEN")


def test_plan_records_facts_and_paths(tmp_path: Path) -> None:
    plan = make_plan(loaded({"images": [image("app")]}, tmp_path), facts(), Options(), reader())
    assert plan.version == "1.2.3" and plan.version_source == "--version"
    assert plan.config_path == tmp_path / "imgctl.yaml"
    assert plan.image("app").context == (tmp_path / "app").resolve()
    assert plan.facts == {"git_sha": SHA, "branch": "main", "date": "20240506", "created": "2024-05-06T07:08:09Z"}
