"""The reference grammar and `{variable}` templates, with property tests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from imgctl import refs
from imgctl.config_fields import TagSpec
from imgctl.config_image import ImageConfig

tags = st.from_regex(refs.TAG_RE, fullmatch=True)
variables = st.sampled_from(refs.TEMPLATE_VARIABLES)
unknown_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True).filter(
    lambda name: name not in refs.TEMPLATE_VARIABLES
)
# Literal text, braces doubled as a template writes them.
literals = st.text(max_size=12).map(lambda text: (text, text.replace("{", "{{").replace("}", "}}")))
parts = st.lists(st.one_of(variables.map(lambda name: ("var", name)), literals.map(lambda lit: ("lit", lit))), max_size=8)
VALUES = {name: f"<{name}>" for name in refs.TEMPLATE_VARIABLES}


@given(tags)
def test_any_tag_renders_and_validates(tag: str) -> None:
    assert refs.template_variables(tag) == ()
    assert refs.render(tag, VALUES) == tag
    assert TagSpec(tag=tag, floating=True).tag == tag
    assert ImageConfig.model_validate({"name": "app", "tags": [tag]}).tags == [tag]


@given(parts)
def test_templates_of_known_variables_and_text_render(template_parts: list[tuple[str, object]]) -> None:
    template = "".join(f"{{{p}}}" if kind == "var" else p[1] for kind, p in template_parts)  # type: ignore[index]
    expected = "".join(VALUES[p] if kind == "var" else p[0] for kind, p in template_parts)  # type: ignore[index]
    names = tuple(p for kind, p in template_parts if kind == "var")
    assert refs.template_variables(template) == names
    assert refs.render(template, VALUES) == expected


@given(st.text(max_size=10), unknown_names, st.text(max_size=10))
def test_unknown_variable_always_raises(before: str, name: str, after: str) -> None:
    escape = lambda text: text.replace("{", "{{").replace("}", "}}")  # noqa: E731
    template = f"{escape(before)}{{{name}}}{escape(after)}"
    with pytest.raises(refs.TemplateError, match=f"unknown variable {{{name}}}"):
        refs.template_variables(template)


@given(st.text(min_size=1))
@settings(max_examples=300)
def test_sanitized_tag_part_is_a_tag(value: str) -> None:
    assert refs.TAG_RE.match(refs.sanitize_tag_part(value))


@given(tags)
def test_sanitize_keeps_a_tag_that_is_already_valid(tag: str) -> None:
    assert refs.sanitize_tag_part(tag) == tag


@pytest.mark.parametrize(("branch", "expected"), [
    ("main", "main"),
    ("feature/x", "feature-x"),
    ("feature/ü-umlaut", "feature---umlaut"),
    ("-leading.dash", "leading.dash"),
    ("../..", "unknown"),
    ("x" * 300, "x" * 128),
])
def test_sanitize_tag_part(branch: str, expected: str) -> None:
    assert refs.sanitize_tag_part(branch) == expected


@pytest.mark.parametrize("tag", ["latest", "1.2.3", "_x", "A-b_c.d", "a" * 128])
def test_tag_re_accepts(tag: str) -> None:
    assert refs.TAG_RE.match(tag)


@pytest.mark.parametrize("tag", ["", ".x", "-x", "a b", "a+b", "a/b", "a:b", "a" * 129, "café", "٣", "latest\n"])
def test_tag_re_refuses(tag: str) -> None:
    assert not refs.TAG_RE.match(tag)


@pytest.mark.parametrize("name", ["app", "acme/app", "a.b_c__d--e/f", "a0/1b"])
def test_repository_re_accepts(name: str) -> None:
    assert refs.REPOSITORY_RE.match(name)


@pytest.mark.parametrize("name", ["App", "-app", "app-", "a//b", "/app", "app/", "a..b", "a___b", "app\n", "ápp"])
def test_repository_re_refuses(name: str) -> None:
    assert not refs.REPOSITORY_RE.match(name)


@pytest.mark.parametrize("host", ["docker.io", "ghcr.io", "localhost", "localhost:5000", "127.0.0.1:5055", "my-reg.example"])
def test_registry_re_accepts(host: str) -> None:
    assert refs.REGISTRY_RE.match(host)


@pytest.mark.parametrize("host", ["https://ghcr.io", "ghcr.io/acme", "-bad.io", "reg:port", "reg:123456", "ghcr.io\n", ""])
def test_registry_re_refuses(host: str) -> None:
    assert not refs.REGISTRY_RE.match(host)


@pytest.mark.parametrize(("template", "message"), [
    ("{version", "malformed template"),
    ("version}", "malformed template"),
    ("{}", "empty {}"),
    ("{version:>10}", "unsupported template field"),
    ("{version!r}", "unsupported template field"),
    ("{version.major}", "unsupported template field"),
    ("{0}", "unsupported template field"),
    ("{Version}", "unknown variable {Version}"),
])
def test_template_errors(template: str, message: str) -> None:
    with pytest.raises(refs.TemplateError, match=message.replace("{", r"\{").replace("}", r"\}")):
        refs.template_variables(template)


def test_template_variables_in_order_with_escaped_braces() -> None:
    assert refs.template_variables("{{literal}}-{major}.{minor}-{major}") == ("major", "minor", "major")
    assert refs.render("{{x}}-{major}", {"major": "1"}) == "{x}-1"


def test_tag_spec_floating_must_be_given() -> None:
    with pytest.raises(ValidationError):
        TagSpec.model_validate({"tag": "x"})


@pytest.mark.parametrize(("registry", "namespace", "name", "api", "full"), [
    ("docker.io", "", "app", "library/app", "docker.io/app"),
    ("docker.io", "acme", "app", "acme/app", "docker.io/acme/app"),
    ("index.docker.io", "", "team/app", "team/app", "index.docker.io/team/app"),
    ("ghcr.io", "", "app", "app", "ghcr.io/app"),
    ("localhost:5000", "a/b", "app", "a/b/app", "localhost:5000/a/b/app"),
])
def test_repository_names(registry: str, namespace: str, name: str, api: str, full: str) -> None:
    assert refs.repository_path(registry, namespace, name) == api
    assert refs.full_repository(registry, namespace, name) == full


def test_docker_hub_aliases() -> None:
    assert all(refs.is_docker_hub(h) for h in ("docker.io", "index.docker.io", "registry-1.docker.io"))
    assert not refs.is_docker_hub("ghcr.io")
