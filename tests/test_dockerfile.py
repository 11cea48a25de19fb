"""FROM-line reading: the images a Dockerfile builds on, and reference normalisation."""

from __future__ import annotations

import pytest

from imgctl.dockerfile import base_images, escape_character, expand, instructions, logical_lines, split_reference, with_labels


def test_plain_from() -> None:
    assert base_images("FROM alpine:3.20\nRUN true\n", {}) == ["alpine:3.20"]


def test_platform_flag_is_skipped() -> None:
    text = "FROM --platform=$BUILDPLATFORM golang:1.22 AS build\nFROM --platform=linux/amd64 debian:12\n"
    assert base_images(text, {}) == ["golang:1.22", "debian:12"]


def test_stage_names_are_not_images() -> None:
    text = (
        "FROM golang:1.22 AS build\n"
        "RUN go build\n"
        "from build as test\n"
        "FROM Build\n"
        "FROM gcr.io/distroless/static\n"
        "COPY --from=build /out /out\n"
    )
    assert base_images(text, {}) == ["golang:1.22", "gcr.io/distroless/static"]


def test_stage_named_like_its_image_still_pulls_the_image() -> None:
    assert base_images("FROM alpine AS alpine\nFROM alpine\n", {}) == ["alpine"]


def test_a_stage_named_later_is_an_image_before() -> None:
    assert base_images("FROM tools\nFROM alpine AS tools\n", {}) == ["tools", "alpine"]


def test_scratch_is_not_an_image() -> None:
    assert base_images("FROM scratch\nCOPY app /app\n", {}) == []


def test_arg_defaults_and_build_args() -> None:
    text = 'ARG REGISTRY=docker.io\nARG TAG="3.20"\nARG BASE\nFROM $REGISTRY/library/alpine:${TAG}\nFROM ${BASE}\n'
    assert base_images(text, {}) == ["docker.io/library/alpine:3.20"]
    assert base_images(text, {"TAG": "edge", "BASE": "ghcr.io/acme/base:1"}) == [
        "docker.io/library/alpine:edge", "ghcr.io/acme/base:1",
    ]


def test_arg_default_uses_earlier_args() -> None:
    text = "ARG REGISTRY=ghcr.io\nARG BASE=${REGISTRY}/acme/base\nFROM $BASE\n"
    assert base_images(text, {}) == ["ghcr.io/acme/base"]
    assert base_images(text, {"REGISTRY": "quay.io"}) == ["quay.io/acme/base"]


def test_several_args_on_one_line() -> None:
    assert base_images("ARG A=ghcr.io B=acme\nFROM $A/$B/x\n", {}) == ["ghcr.io/acme/x"]


def test_args_after_the_first_from_do_not_reach_later_from_lines() -> None:
    text = "FROM alpine\nARG NEXT=debian\nFROM ${NEXT:-ubuntu}\n"
    assert base_images(text, {"NEXT": "fedora"}) == ["alpine", "ubuntu"]


@pytest.mark.parametrize(("value", "variables", "expected"), [
    ("${A:-alpine}", {}, "alpine"),
    ("${A:-alpine}", {"A": "debian"}, "debian"),
    ("${A:-alpine}", {"A": ""}, "alpine"),
    ("x${A:+-suffix}", {"A": "1"}, "x-suffix"),
    ("x${A:+-suffix}", {}, "x"),
    ("$A/$B_C", {"A": "a", "B_C": "b"}, "a/b"),
    ("$UNSET/app", {}, "/app"),
    ("no variables", {}, "no variables"),
])
def test_expand(value: str, variables: dict[str, str], expected: str) -> None:
    assert expand(value, variables) == expected


def test_undefined_variable_from_is_skipped() -> None:
    assert base_images("FROM $NOTHING\nFROM alpine\n", {}) == ["alpine"]


def test_line_continuations_and_comments() -> None:
    text = (
        "# syntax=docker/dockerfile:1\n"
        "  # an indented comment\n"
        "FROM \\\n"
        "    # a comment inside the instruction\n"
        "\n"
        "    --platform=linux/arm64 \\\n"
        "    python:3.12-slim \\\n"
        "    AS app\n"
        "RUN echo FROM nothing\n"
    )
    assert base_images(text, {}) == ["python:3.12-slim"]
    assert logical_lines(text) == [
        "FROM  --platform=linux/arm64  python:3.12-slim  AS app",
        "RUN echo FROM nothing",
    ]


def test_unfinished_continuation_at_end_of_file() -> None:
    assert logical_lines("RUN a \\\n") == ["RUN a  "]
    assert base_images("FROM alpine \\\n", {}) == ["alpine"]


def test_keyword_case_and_tabs() -> None:
    assert base_images("from alpine\nFrom\tdebian:12\n", {}) == ["alpine", "debian:12"]


def test_empty_from_is_ignored() -> None:
    assert base_images("FROM\nFROM --platform=x\n", {}) == []


@pytest.mark.parametrize(("reference", "expected"), [
    ("alpine", ("docker.io", "library/alpine")),
    ("alpine:3.20", ("docker.io", "library/alpine")),
    ("alpine@sha256:" + "a" * 64, ("docker.io", "library/alpine")),
    ("acme/app:1.0", ("docker.io", "acme/app")),
    ("docker.io/alpine", ("docker.io", "library/alpine")),
    ("docker.io/acme/app", ("docker.io", "acme/app")),
    ("index.docker.io/acme/app:latest", ("docker.io", "acme/app")),
    ("registry-1.docker.io/library/alpine", ("docker.io", "library/alpine")),
    ("registry.hub.docker.com/alpine:3", ("docker.io", "library/alpine")),
    ("index.docker.io/alpine", ("docker.io", "library/alpine")),
    ("docker.io/library/alpine:3.20", ("docker.io", "library/alpine")),
    ("ghcr.io/acme/app:1.2.3", ("ghcr.io", "acme/app")),
    ("ghcr.io/acme/team/app@sha256:" + "b" * 64, ("ghcr.io", "acme/team/app")),
    ("localhost/app", ("localhost", "app")),
    ("localhost:5000/app:dev", ("localhost:5000", "app")),
    ("127.0.0.1:5055/demo/base:1.0", ("127.0.0.1:5055", "demo/base")),
    ("acme/app:1.0@sha256:" + "c" * 64, ("docker.io", "acme/app")),
])
def test_split_reference(reference: str, expected: tuple[str, str]) -> None:
    assert split_reference(reference) == expected


# -- with_labels: the build labels as one LABEL line -------------------------------------------

LABELS = {"org.opencontainers.image.version": "1.2.3", "com.example.note": 'say "hi" to $USER \\ now'}


def test_labels_go_at_the_end_quoted_so_nothing_is_expanded() -> None:
    folded = with_labels("FROM scratch\nCOPY a /a", LABELS, None)
    assert folded == (
        "FROM scratch\nCOPY a /a\n"
        'LABEL org.opencontainers.image.version="1.2.3" com.example.note="say \\"hi\\" to \\$USER \\\\ now"\n'
    )
    # every instruction that was there starts on the same line, and one LABEL follows
    assert instructions(folded)[:-1] == instructions("FROM scratch\nCOPY a /a")


def test_labels_use_the_escape_directive() -> None:
    text = "# escape=`\nFROM scratch\nRUN a `\n  b\n"
    folded = with_labels(text, {"a": "x`y\\z"}, None)
    assert folded == text + 'LABEL a="x``y\\z"\n'
    assert escape_character(text) == "`" and escape_character("FROM scratch\n") == "\\"


def test_labels_end_the_target_stage_before_the_next_one() -> None:
    text = "FROM scratch AS build\nRUN a \\\n  b\n\n# next\nFROM scratch AS test\nRUN c\n"
    folded = with_labels(text, {"a": "1"}, "BUILD")
    assert folded == "FROM scratch AS build\nRUN a \\\n  b\n\n# next\nLABEL a=\"1\"\nFROM scratch AS test\nRUN c\n"
    built = instructions(text)[:2]
    assert instructions(folded)[:2] == built  # the stage built is untouched, its steps keep their lines
    assert with_labels(text, {"a": "1"}, "test") == text + 'LABEL a="1"\n'


@pytest.mark.parametrize(
    ("text", "labels", "target"),
    [
        ("FROM scratch\nRUN a \\\n", {"a": "1"}, None),  # the last line continues
        ("FROM scratch\nRUN a \\\n# a comment\n\n", {"a": "1"}, None),  # still continuing
        ("ARG X=1\n", {"a": "1"}, None),  # no FROM: the build reports its own error
        ("FROM scratch AS one\n", {"a": "1"}, "two"),  # no such stage
        ("FROM scratch\n", {"a b": "1"}, None),  # a key LABEL cannot carry verbatim
        ("FROM scratch\n", {"a=b": "1"}, None),
        ("FROM scratch\n", {"a": "two\nlines"}, None),  # a value that is not one printable line
        ("FROM scratch\n", {"a": "tab\there"}, None),
        ("FROM scratch\n", {}, None),  # nothing to add
    ],
)
def test_labels_are_left_to_the_builder_when_a_line_cannot_be_exact(
    text: str, labels: dict[str, str], target: str | None
) -> None:
    assert with_labels(text, labels, target) is None


def test_labels_survive_an_empty_continued_line() -> None:
    assert with_labels("\\\n\nFROM scratch\n", {"a": "1"}, None) == '\\\n\nFROM scratch\nLABEL a="1"\n'
