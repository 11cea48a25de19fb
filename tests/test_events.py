"""Replays real engine streams (tests/fixtures/streams, see its README) through the decoder and
the build/push parsers, plus property tests of the decoder against any chunking or corruption."""

from __future__ import annotations

import base64
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imgctl.errors import AuthFailed, BuildFailed, PushFailed
from imgctl.events import BuildOutput, BuildStep, LayerProgress
from imgctl.retry_classify import classify_text, is_auth_text, is_transient
from imgctl.streams import BuildStreamParser, JsonStreamDecoder, PushStreamParser, StreamGarbled

STREAMS = Path(__file__).parent / "fixtures" / "streams"
NAMES = sorted(p.stem for p in STREAMS.glob("*.jsonl"))
BUILDS = [n for n in NAMES if n.startswith("build_")]
PUSHES = [n for n in NAMES if n.startswith("push_")]


@cache
def load(name: str) -> tuple[dict[str, Any], tuple[bytes | str, ...]]:
    header, *lines = (STREAMS / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    chunks: list[bytes | str] = []
    for line in lines:
        c = json.loads(line)
        chunks.append(c["text"].encode("utf-8") if "text" in c else base64.b64decode(c["b64"]) if "b64" in c else c["str"])
    return json.loads(header), tuple(chunks)


def raw(name: str) -> bytes:
    return b"".join(c.encode("utf-8") if isinstance(c, str) else c for c in load(name)[1])


def decode(chunks: list[bytes] | tuple[bytes | str, ...]) -> list[dict[str, Any]]:
    decoder = JsonStreamDecoder()
    out: list[dict[str, Any]] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    return out + decoder.close()


@cache
def records(name: str) -> tuple[dict[str, Any], ...]:
    return tuple(decode(load(name)[1]))


def build(name: str) -> tuple[list[Any], BuildStreamParser]:
    parser = BuildStreamParser("app")
    events = [e for r in records(name) for e in parser.handle(r)]
    return events, parser


def push(name: str, recs: tuple[dict[str, Any], ...] | None = None) -> tuple[list[Any], PushStreamParser]:
    parser = PushStreamParser("app", load(name)[0]["reference"])
    events = [e for r in (records(name) if recs is None else recs) for e in parser.handle(r)]
    return events, parser


# -- the recordings themselves ---------------------------------------------------------------


def test_every_expected_recording_is_present() -> None:
    assert set(NAMES) >= {
        "build_ok", "build_run_fails", "build_syntax_error", "build_bad_instruction_args", "push_ok", "push_again",
        "push_noauth", "push_badpass", "push_manifest_503", "push_manifest_429", "push_manifest_reset", "push_refused",
    }


@pytest.mark.parametrize("name", NAMES)
def test_decoder_agrees_with_json_per_line(name: str) -> None:
    expected = [json.loads(line) for line in raw(name).decode("utf-8").splitlines() if line.strip()]
    assert list(records(name)) == expected
    assert all(isinstance(c, bytes) and c.endswith(b"}\r\n") for c in load(name)[1])  # one record per chunk


# -- builds ----------------------------------------------------------------------------------


def test_build_ok_gives_the_image_id_steps_and_every_output_line_in_order() -> None:
    header = load("build_ok")[0]
    events, parser = build("build_ok")
    tail, image_id = parser.finish()
    assert tail == []
    assert image_id == header["image_id"] and re.fullmatch(r"sha256:[0-9a-f]{64}", image_id)

    instructions = [line for line in header["dockerfile"].splitlines() if line]
    steps = [e for e in events if isinstance(e, BuildStep)]
    assert [(s.step, s.total, s.instruction) for s in steps] == [(i + 1, 7, ins) for i, ins in enumerate(instructions)]

    seen = [f"#{e.step}" if isinstance(e, BuildStep) else e.line for e in events if not getattr(e, "internal", False)]
    assert seen == [
        "#1", "#2", "#3",
        "#4", "line-one", "line-two", "héllo wörld ✓ 日本", "line-four",
        "#5", "no-newline-at-end",
        "#6", "progress done", "after-progress",
        "#7",
    ]
    internal = [e.line for e in events if isinstance(e, BuildOutput) and e.internal]
    assert sum(line.startswith("Removing intermediate container ") for line in internal) == 5  # 4 RUN + LABEL
    assert internal[-2:] == [f"Successfully built {image_id[7:19]}", f"Successfully tagged {header['tag']}"]
    assert list(parser.tail) == ["line-one", "line-two", "héllo wörld ✓ 日本", "line-four", "no-newline-at-end",
                                 "progress done", "after-progress"]


def test_build_with_failing_run_names_the_step_and_keeps_the_output() -> None:
    events, parser = build("build_run_fails")
    with pytest.raises(BuildFailed) as info:
        parser.finish()
    message = info.value.message
    assert "at Step 4/5 : RUN echo before-fail && false" in message
    assert "The command '/bin/sh -c echo before-fail && false' returned a non-zero code: 1" in message
    assert info.value.output == ("before-fail",)
    assert [e.step for e in events if isinstance(e, BuildStep)] == [1, 2, 3, 4]


def test_build_with_bad_instruction_arguments_fails_in_stream() -> None:
    _, parser = build("build_bad_instruction_args")
    with pytest.raises(BuildFailed, match=r"at Step 3/3 : EXPOSE not-a-port: Invalid containerPort: not-a-port"):
        parser.finish()


def test_dockerfile_parse_error_is_an_http_400_not_a_stream() -> None:
    header, chunks = load("build_syntax_error")
    assert chunks == ()
    assert header["raised"]["status_code"] == 400
    assert "unknown instruction: FROBNICATE" in header["raised"]["explanation"]
    with pytest.raises(BuildFailed, match="ended without an image id"):
        BuildStreamParser("app").finish()


def test_output_without_newline_before_the_error_reaches_the_tail() -> None:
    parser = BuildStreamParser("app")
    parser.handle({"stream": "Step 1/1 : RUN printf half\n"})
    parser.handle({"stream": "half"})
    parser.handle({"errorDetail": {"message": "boom"}, "error": "boom"})
    with pytest.raises(BuildFailed) as info:
        parser.finish()
    assert info.value.output == ("half",)


# -- pushes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["push_ok", "push_again"])
def test_push_gives_the_registry_digest_and_size(name: str) -> None:
    header = load(name)[0]
    _, parser = push(name)
    digest, size = parser.finish()
    assert digest == header["registry_digest"]
    status = next(r["status"] for r in records(name) if "digest:" in r.get("status", ""))
    assert status.endswith(f"digest: {digest} size: {size}") and size > 0


def test_push_ok_reports_progress_per_layer() -> None:
    events, _ = push("push_ok")
    assert all(isinstance(e, LayerProgress) for e in events)
    by_layer: dict[str, list[LayerProgress]] = {}
    for e in events:
        by_layer.setdefault(e.layer, []).append(e)
    assert len(by_layer) == 2
    for layer_events in by_layer.values():
        statuses = [e.status for e in layer_events]
        assert statuses[0] == "Preparing" and statuses[-1] == "Pushed" and "Pushing" in statuses
        pushing = [e for e in layer_events if e.status == "Pushing"]
        assert all(isinstance(e.current, int) and isinstance(e.total, int) for e in pushing)
        assert [e.current for e in pushing] == sorted(e.current for e in pushing)
    assert all(e.reference == load("push_ok")[0]["reference"] for e in events)


def test_second_push_finds_every_layer_already_there() -> None:
    events, _ = push("push_again")
    done = {e.layer: e.status for e in events}
    assert len(done) == 2 and set(done.values()) == {"Layer already exists"}
    assert load("push_again")[0]["registry_digest"] == load("push_ok")[0]["registry_digest"]


@pytest.mark.parametrize(
    ("name", "auth", "transient", "text"),
    [
        ("push_noauth", True, False, "no basic auth credentials"),
        ("push_badpass", True, False, "unauthorized: authentication required"),
        ("push_manifest_503", False, True, "503 Service Unavailable"),
        ("push_manifest_429", False, True, "toomanyrequests"),
        ("push_manifest_reset", False, True, "connection reset by peer"),
        ("push_refused", False, True, "connection refused"),
    ],
)
def test_push_error_streams_raise_classified_push_failed(name: str, auth: bool, transient: bool, text: str) -> None:
    assert load(name)[0]["registry_digest"] is None  # nothing landed
    _, parser = push(name)
    with pytest.raises(PushFailed) as info:
        parser.finish()
    assert text in parser.error and text in info.value.message
    assert info.value.transient is transient
    assert is_transient(info.value) is transient
    assert is_auth_text(parser.error) is auth  # what the engine turns into AuthFailed
    assert is_auth_text(info.value.message) is auth  # the reference in the message must not count
    assert classify_text(parser.error) == (transient, None)


def test_push_stream_without_aux_digest_fails_transiently() -> None:
    recs = tuple(r for r in records("push_ok") if "aux" not in r)
    assert len(recs) == len(records("push_ok")) - 1
    _, parser = push("push_ok", recs)
    with pytest.raises(PushFailed, match="without a digest") as info:
        parser.finish()
    assert info.value.transient


# -- retry classification --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "transient"),
    [
        ("unauthorized: authentication required", False),
        ("no basic auth credentials", False),
        ("denied: requested access to the resource is denied", False),
        ("received unexpected HTTP status: 401 Unauthorized", False),
        ("received unexpected HTTP status: 403 Forbidden", False),
        ("received unexpected HTTP status: 500 Internal Server Error", True),
        ("received unexpected HTTP status: 502 Bad Gateway", True),
        ("received unexpected HTTP status: 504 Gateway Timeout", True),
        ("toomanyrequests: You have reached your pull rate limit", True),
        ("unexpected EOF", True),
        ('Put "http://127.0.0.1:5000/v2/x/blobs/uploads/": net/http: TLS handshake timeout', True),
        ('Get "http://127.0.0.1:5000/v2/": context deadline exceeded', True),
        ("dial tcp 10.0.0.1:443: i/o timeout", True),
        ('Put "http://127.0.0.1:5000/v2/x/manifests/403": write: broken pipe', True),
        ("dial tcp 127.0.0.1:403: connect: connection refused", True),
        ('Put "http://127.0.0.1:5000/v2/denied/manifests/1": read: connection reset by peer', True),
        ("manifest invalid: manifest invalid", False),
        ('Put "http://127.0.0.1:5000/v2/x/manifests/503": manifest invalid', False),
        ("tag does not exist: 127.0.0.1:5000/x:1", False),
    ],
)
def test_classify_text(text: str, transient: bool) -> None:
    assert classify_text(text) == (transient, None)


def test_is_transient_for_stream_failures() -> None:
    assert is_transient(StreamGarbled("cut"))
    assert not is_transient(AuthFailed("no"))
    assert not is_transient(BuildFailed("no"))


# -- decoding: chunking, UTF-8, truncation, garbage ------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_split_at_every_byte_boundary_gives_the_same_records(name: str) -> None:
    data, expected = raw(name), list(records(name))
    for i in range(len(data) + 1):
        assert decode([data[:i], data[i:]]) == expected, i


@pytest.mark.parametrize("name", NAMES)
def test_one_byte_chunks_give_the_same_records(name: str) -> None:
    data = raw(name)
    assert decode([data[i : i + 1] for i in range(len(data))]) == list(records(name))


@pytest.mark.parametrize("char", ["é", "✓", "日"])
def test_multibyte_character_split_across_chunks(char: str) -> None:
    data, encoded = raw("build_ok"), char.encode("utf-8")
    at = data.index(encoded)
    for cut in range(1, len(encoded)):
        decoder = JsonStreamDecoder()
        first = decoder.feed(data[: at + cut])
        rest = decoder.feed(data[at + cut :]) + decoder.close()
        assert first + rest == list(records("build_ok"))
        assert any(char in r.get("stream", "") for r in rest)


def _record_spans(data: bytes) -> list[tuple[int, int]]:
    """(first, last+1) byte offsets of each record's JSON text, without the line ending."""
    spans, start = [], 0
    for line in data.split(b"\n"):
        body = line.rstrip(b"\r")
        if body.strip():
            spans.append((start, start + len(body)))
        start += len(line) + 1
    return spans


@pytest.mark.parametrize("name", NAMES)
def test_truncated_stream_raises_or_gives_whole_records(name: str) -> None:
    data, expected = raw(name), list(records(name))
    spans = _record_spans(data)
    for i in range(len(data) + 1):
        inside = any(a < i < b for a, b in spans)
        if inside:
            with pytest.raises(StreamGarbled):
                decode([data[:i]])
        else:
            assert decode([data[:i]]) == expected[: sum(b <= i for _, b in spans)], i


@pytest.mark.parametrize(
    "garbage",
    [
        b"not json\n",
        b'{"stream": "x"}\r\nHTTP/1.1 502 Bad Gateway\r\n',
        b"[1, 2]\n",
        b'"a string"\n',
        b"\xff\xfe{}\n",
        b'{"stream": "\xe2\x9c"}\n',  # a UTF-8 sequence cut short inside a record
        b"[" * 100_000 + b"\n",
        b'{"a":' * 100_000 + b"\n",
        b'{"stream": "x"}{"stream"',
        b'{"stream": "x"} trailing\n',
    ],
)
def test_garbage_raises_stream_garbled(garbage: bytes) -> None:
    with pytest.raises(StreamGarbled):
        decode([garbage])


def test_str_chunks_decode_and_lone_surrogates_are_garbage() -> None:
    assert decode(['{"stream": "h\u00e9"}\n', '{"aux": {}}']) == [{"stream": "hé"}, {"aux": {}}]
    with pytest.raises(StreamGarbled):
        decode(['{"stream": "\ud800"}\n'])


def test_several_records_on_one_line_and_blank_lines() -> None:
    assert decode([b'{"a": 1}{"b": 2}\r\n\r\n  \n{"c": 3}']) == [{"a": 1}, {"b": 2}, {"c": 3}]


def test_overlong_record_is_garbage() -> None:
    decoder = JsonStreamDecoder()
    decoder.MAX_LINE = 64  # type: ignore[misc]
    decoder.feed(b'{"stream": "' + b"x" * 40)
    with pytest.raises(StreamGarbled, match="longer than"):
        decoder.feed(b"x" * 40)


# -- properties ------------------------------------------------------------------------------

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def split_recording(draw: st.DrawFn) -> tuple[str, list[bytes]]:
    name = draw(st.sampled_from([n for n in NAMES if raw(n)]))
    data = raw(name)
    cuts = sorted(draw(st.sets(st.integers(0, len(data)), max_size=40)))
    bounds = [0, *cuts, len(data)]
    return name, [data[a:b] for a, b in zip(bounds, bounds[1:])]


@PROPS
@given(split_recording())
def test_any_split_of_a_recording_decodes_the_same(case: tuple[str, list[bytes]]) -> None:
    name, chunks = case
    assert decode(chunks) == list(records(name))


def _only_garbled(chunks: list[bytes]) -> None:
    try:
        result = decode(chunks)
    except StreamGarbled:
        return
    assert all(isinstance(r, dict) for r in result)


@PROPS
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_random_bytes_raise_nothing_but_stream_garbled(chunks: list[bytes]) -> None:
    _only_garbled(chunks)


@PROPS
@given(st.lists(st.text(max_size=32), max_size=6))
def test_random_text_chunks_raise_nothing_but_stream_garbled(chunks: list[str]) -> None:
    try:
        result = decode(chunks)  # type: ignore[arg-type]
    except StreamGarbled:
        return
    assert all(isinstance(r, dict) for r in result)


@PROPS
@given(st.data())
def test_truncated_or_corrupted_recordings_raise_nothing_but_stream_garbled(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from([n for n in NAMES if raw(n)]))
    stream = bytearray(raw(name))
    for _ in range(data.draw(st.integers(0, 4))):
        at = data.draw(st.integers(0, len(stream) - 1))
        stream[at : at + 1] = data.draw(st.binary(max_size=4))
    cut = data.draw(st.integers(0, len(stream)))
    _only_garbled([bytes(stream[:cut])])


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_keys = st.sampled_from(["stream", "status", "id", "aux", "error", "errorDetail", "progressDetail", "progress"])


@PROPS
@given(st.lists(st.dictionaries(_keys, _json, max_size=4), max_size=8))
def test_parsers_accept_any_records_and_fail_only_with_their_own_errors(recs: list[dict[str, Any]]) -> None:
    build_parser, push_parser = BuildStreamParser("app"), PushStreamParser("app", "r/app:1")
    for r in recs:
        build_parser.handle(r)
        push_parser.handle(r)
    try:
        build_parser.finish()
    except BuildFailed:
        pass
    try:
        push_parser.finish()
    except PushFailed:
        pass


# -- the events themselves: frozen values, equal by type and every field ----------------------


def test_events_are_frozen_values_equal_by_type_and_every_field() -> None:
    import dataclasses

    from imgctl.events import PushDone, Verified

    one = PushDone(image="app", time=1.0, reference="r:1", digest="sha256:a", size=3)
    assert one == PushDone(image="app", time=1.0, reference="r:1", digest="sha256:a", size=3)
    assert hash(one) == hash(PushDone(image="app", time=1.0, reference="r:1", digest="sha256:a", size=3))
    assert one != dataclasses.replace(one, size=4)  # a field of the subclass counts
    assert one != dataclasses.replace(one, platform="linux/arm64")  # and one of Event's
    assert one != Verified(image="app", time=1.0, reference="r:1", digest="sha256:a")  # so does the type
    assert repr(one) == "PushDone(image='app', time=1.0, platform=None, reference='r:1', digest='sha256:a', size=3)"
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.size = 4  # type: ignore[misc]
    assert one.to_dict() == {"type": "push_done", "image": "app", "time": 1.0, "platform": None,
                             "reference": "r:1", "digest": "sha256:a", "size": 3}
