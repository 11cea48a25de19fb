"""The build context: .dockerignore as the docker CLI applies it, the tar stream, the inputs digest.

The oracle is the docker CLI itself: it is pointed at a fake engine on a unix socket that keeps the
context it receives, and imgctl's stream must be byte for byte the same.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socketserver
import subprocess
import sys
import tarfile
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from imgctl.context import GENERATED_DOCKERFILE, build_context, context_files, stream_context
from imgctl.tarstream import CHUNK
from imgctl.snapshot import inputs_digest
from imgctl.errors import BuildFailed
from tests.conftest import BUSYBOX

# -- a fake engine that records what `docker build` uploads -------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, body: bytes = b"OK", kind: str = "text/plain") -> None:
        self.send_response(200)
        self.send_header("Api-Version", "1.41")
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(b"")

    def do_GET(self) -> None:  # noqa: N802
        self._answer()

    def do_POST(self) -> None:  # noqa: N802
        body = b""
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            while size := int(self.rfile.readline().split(b";")[0], 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.uploads.append(body)  # type: ignore[attr-defined]
        lines = [{"stream": "recorded\n"}, {"aux": {"ID": "sha256:" + "0" * 64}}]
        self._answer("".join(json.dumps(line) + "\r\n" for line in lines).encode(), "application/json")


class _FakeEngine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    uploads: list[bytes]


@pytest.fixture(scope="module")
def cli_upload(tmp_path_factory: pytest.TempPathFactory) -> Iterator:  # type: ignore[type-arg]
    """cli_upload(folder) -> the tar that `DOCKER_BUILDKIT=0 docker build folder` uploads."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.fail("the docker CLI is needed (scripts/setup.sh installs docker.io)")
    folder = tmp_path_factory.mktemp("fake-engine")
    (folder / "config").mkdir()
    (folder / "config" / "config.json").write_text("{}")
    server = _FakeEngine(str(folder / "engine.sock"), _Handler)
    server.uploads = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")}
    env.update(DOCKER_HOST=f"unix://{folder / 'engine.sock'}", DOCKER_BUILDKIT="0", DOCKER_CONFIG=str(folder / "config"))

    def upload(context: Path, dockerfile: str = "Dockerfile") -> bytes:
        server.uploads.clear()
        command = [docker, "build", "-q", "-f", str(context / dockerfile), str(context)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and len(server.uploads) == 1, done.stderr
        return server.uploads[0]

    version = subprocess.run([docker, "--version"], capture_output=True, text=True).stdout  # "Docker version 28.2.2, ..."
    upload.major = int(version.split()[2].split(".")[0])  # type: ignore[attr-defined]
    yield upload
    server.shutdown()
    server.server_close()


# -- contexts ------------------------------------------------------------------------------------

FILES = {
    "Dockerfile": "FROM scratch\nCOPY . /ctx\n",
    "a.txt": "a", "b.txt": "b", "A.LOG": "upper", "notes.md": "n",
    "sub/b.log": "log", "sub/deep/c.txt": "c", "sub/deep/d.tmp": "tmp",
    "other/c.txt": "c2", "x.tmp/in": "in", "docs/Dockerfile.dev": "FROM scratch\n", "#hash.txt": "h",
}


def make_context(folder: Path, dockerignore: str | None = None, files: dict[str, str] = FILES) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    (folder / "empty").mkdir(exist_ok=True)
    (folder / "link").symlink_to("a.txt")
    os.link(folder / "a.txt", folder / "hard.txt")
    os.chmod(folder / "b.txt", 0o600)
    if dockerignore is not None:
        (folder / ".dockerignore").write_text(dockerignore)
    return folder


def read_back(stream: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(stream)) as tar:
        return {member.name: member for member in tar}


def same_archive(ours: bytes, cli: bytes) -> None:
    """Same entries, types, permissions, owners, sizes, mtimes, links and contents, in order."""

    def view(stream: bytes) -> list[tuple[object, ...]]:
        with tarfile.open(fileobj=io.BytesIO(stream)) as tar:
            return [(m.name, m.type, m.mode & 0o7777, m.uid, m.gid, m.size, m.mtime, m.linkname,
                     tar.extractfile(m).read() if m.isfile() else None) for m in tar]  # type: ignore[union-attr]

    assert view(ours) == view(cli)
    # CLIs before 23.0 also write the names "root"/"root" and the file type in the mode field.
    if all(m.uname == "" for m in read_back(cli).values()):
        assert ours == cli


# Each case: a .dockerignore, and whether docker-py's exclude_paths agrees with the CLI on it.
CASES = {
    "none": ("", True),
    "folder": ("sub\n", True),
    "exception inside an excluded folder": ("sub\n!sub/deep/c.txt\n", True),
    "folder with trailing slash, exception": ("sub/\n!sub/b.log\n", True),
    "star and double star": ("*.md\n**/*.tmp\n", True),
    "double star folder": ("**/deep\n", True),
    "leading slash and comments": ("/a.txt\n# a comment\n\n/other/\n", True),
    "everything but": ("*\n!sub\n!Dockerfile\n", True),
    "all, then re-include": ("**\n!sub/deep\n", True),
    "Dockerfile and .dockerignore are still sent": ("Dockerfile\n.dockerignore\n", True),
    "trailing double star": ("sub/**\n", True),
    "leading double star": ("**/c.txt\n", True),
    "question mark and class": ("?.txt\n[ab].tmp\n", True),
    "dot-dot is cleaned": ("x/../a.txt\n./notes.md\n", True),
    "links": ("link\nhard.txt\n", True),
    # docker-py lower-cases names and patterns; the CLI is case-sensitive
    "case matters": ("*.log\n", False),
    # CLI 23.0 and later check `!sub` against sub/deep/c.txt using its parent's results, and keep
    # it out; docker-py and older CLIs send it
    "exception after a deeper match": ("**/c.txt\n!sub\n", False),
    # the CLI takes `#` as a comment only in the first column: this line excludes #hash.txt
    "indented hash": ("  #hash.txt\n", False),
}


@pytest.mark.parametrize("case", CASES)
def test_stream_is_what_the_docker_cli_sends(case: str, tmp_path: Path, cli_upload) -> None:  # type: ignore[no-untyped-def]
    if case == "exception after a deeper match" and cli_upload.major < 23:
        pytest.skip("docker CLI before 23.0 matched exceptions differently; imgctl follows the current CLI")
    context = make_context(tmp_path, CASES[case][0])
    same_archive(b"".join(stream_context(context, "Dockerfile")), cli_upload(context))


@pytest.mark.parametrize("case", CASES)
def test_docker_py_agrees_except_where_it_is_known_not_to(case: str, tmp_path: Path) -> None:
    from docker.utils.build import exclude_paths

    text, agrees = CASES[case]
    context = make_context(tmp_path, text)
    # docker-py's own reading of .dockerignore (docker/api/build.py)
    patterns = [line.strip() for line in text.splitlines() if line.strip() and line.strip()[0] != "#"]
    theirs = set(exclude_paths(str(context), patterns, dockerfile="Dockerfile"))
    ours = {name for name, _ in context_files(context, "Dockerfile")}
    assert (ours == theirs) is agrees, sorted(ours ^ theirs)


def test_dockerfile_in_an_excluded_folder_is_sent_alone(tmp_path: Path, cli_upload) -> None:  # type: ignore[no-untyped-def]
    context = make_context(tmp_path, "docs\n.dockerignore\n")
    names = [name for name, _ in context_files(context, "docs/Dockerfile.dev")]
    assert "docs/Dockerfile.dev" in names and ".dockerignore" in names and "docs" not in names
    same_archive(b"".join(stream_context(context, "docs/Dockerfile.dev")), cli_upload(context, "docs/Dockerfile.dev"))


def test_stream_reads_back_with_the_same_files(tmp_path: Path) -> None:
    context = make_context(tmp_path, "*.md\n")
    (context / "big.bin").write_bytes(os.urandom(3 * CHUNK + 123))
    os.chmod(context / "sub" / "b.log", 0o751)
    chunks = list(stream_context(context, "Dockerfile"))
    assert all(0 < len(chunk) <= CHUNK + 1024 for chunk in chunks)  # memory stays flat
    members = read_back(b"".join(chunks))
    expected = [name for name, _ in context_files(context, "Dockerfile")]
    assert [m.rstrip("/") for m in members] == expected
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        for name, member in members.items():
            path = context / name
            st = path.lstat()
            assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
            assert member.mtime == int(st.st_mtime)
            assert member.mode == st.st_mode & 0o7777
            if member.isfile():
                assert tar.extractfile(member).read() == path.read_bytes()  # type: ignore[union-attr]
    assert members["link"].issym() and members["link"].linkname == "a.txt"
    assert members["hard.txt"].islnk() and members["hard.txt"].linkname == "a.txt"
    assert members["empty"].isdir() and "notes.md" not in members


def test_stream_is_produced_while_walking(tmp_path: Path) -> None:
    context = make_context(tmp_path)
    (context / "a-big.bin").write_bytes(os.urandom(2 * CHUNK))
    (context / "zz").mkdir()
    (context / "zz" / "late.txt").write_text("late")
    stream = stream_context(context, "Dockerfile")
    first = next(stream)
    (context / "zz" / "late.txt").unlink()  # the walk has not reached zz/ yet
    names = read_back(first + b"".join(stream))
    assert "zz/" in names or "zz" in names
    assert "zz/late.txt" not in names


# -- errors --------------------------------------------------------------------------------------


def test_context_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "ctx").write_text("not a folder")
    with pytest.raises(BuildFailed, match="is a file; it must be a folder"):
        stream_context(tmp_path / "ctx", "Dockerfile")
    with pytest.raises(BuildFailed, match="does not exist"):
        context_files(tmp_path / "missing", "Dockerfile")


def test_missing_or_outside_dockerfile(tmp_path: Path) -> None:
    make_context(tmp_path / "ctx")
    with pytest.raises(BuildFailed, match="'Nope' not found"):
        stream_context(tmp_path / "ctx", "Nope")
    with pytest.raises(BuildFailed, match="outside the build context"):
        stream_context(tmp_path / "ctx", "../Dockerfile")


def test_symlink_loops(tmp_path: Path) -> None:
    # Inside the context a symlink is archived as a symlink, never followed: a loop is harmless
    # (the docker CLI archives it the same way).
    context = make_context(tmp_path / "ctx")
    (context / "loop").symlink_to("loop")
    (context / "ping").symlink_to("pong")
    (context / "pong").symlink_to("ping")
    members = read_back(b"".join(stream_context(context, "Dockerfile")))
    assert members["loop"].linkname == "loop" and members["ping"].linkname == "pong"
    # Where something must be followed, a loop is an error that says so.
    (context / "Dockerfile.loop").symlink_to("Dockerfile.loop")
    with pytest.raises(BuildFailed, match="Dockerfile.loop' in .* is a symlink loop"):
        stream_context(context, "Dockerfile.loop")
    (tmp_path / "looped").symlink_to("looped")
    with pytest.raises(BuildFailed, match="looped is a symlink loop"):
        context_files(tmp_path / "looped", "Dockerfile")


def test_dockerfile_symlink_sends_its_target(tmp_path: Path) -> None:
    context = make_context(tmp_path / "ctx", "docs\n")
    (context / "Dockerfile").unlink()
    (context / "Dockerfile").symlink_to("docs/Dockerfile.dev")
    names = [name for name, _ in context_files(context, "Dockerfile")]
    assert "Dockerfile" in names and "docs/Dockerfile.dev" in names


UNREADABLE_CHECK = """
import sys
from pathlib import Path
from imgctl.context import context_files, stream_context
from imgctl.errors import BuildFailed
for call in (lambda: context_files(Path(sys.argv[1]), "Dockerfile"),
             lambda: b"".join(stream_context(Path(sys.argv[1]), "Dockerfile"))):
    try:
        call()
        print("no error")
    except BuildFailed as exc:
        print(exc.message)
"""


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    context = make_context(tmp_path / "ctx")
    (context / "sub" / "secret.key").write_text("key")
    os.chmod(context / "sub" / "secret.key", 0)
    command = [sys.executable, "-c", UNREADABLE_CHECK, str(context)]
    if os.geteuid() == 0:
        # root reads anything: drop the two capabilities that let it ignore file modes
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and util-linux's setpriv is missing: cannot make a file unreadable")
        caps = "-dac_override,-dac_read_search"
        command = [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", *command]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    for line in lines:
        assert "cannot read 'sub/secret.key'" in line and "Permission denied" in line


def test_fifo_is_archived_never_opened(tmp_path: Path) -> None:
    context = make_context(tmp_path / "ctx")
    os.mkfifo(context / "pipe")  # opening it would block forever
    assert "pipe" in {name for name, _ in context_files(context, "Dockerfile")}
    assert read_back(b"".join(stream_context(context, "Dockerfile")))["pipe"].isfifo()


def test_bad_pattern(tmp_path: Path) -> None:
    context = make_context(tmp_path / "ctx", "[abc\n")
    with pytest.raises(BuildFailed, match="bad pattern"):
        stream_context(context, "Dockerfile")
    (context / ".dockerignore").write_text("!\n")
    with pytest.raises(BuildFailed, match="illegal exclusion pattern"):
        stream_context(context, "Dockerfile")


# -- inputs_digest -------------------------------------------------------------------------------


def test_inputs_digest(tmp_path: Path) -> None:
    context = make_context(tmp_path / "ctx", "*.md\n")
    args, bases = {"VERSION": "1.0.0", "BASE": "reg/base:1"}, {"reg/base:1": "sha256:" + "a" * 64}

    def digest(**changes: object) -> str:
        return inputs_digest(context, "Dockerfile", changes.get("args", args), changes.get("bases", bases))  # type: ignore[arg-type]

    first = digest()
    assert first.startswith("sha256:") and digest() == first
    assert inputs_digest(context, "Dockerfile", dict(reversed(args.items())), bases) == first

    os.utime(context / "a.txt", (1, 1))
    os.utime(context / "sub", (2, 2))
    (context / "notes.md").write_text("ignored change")
    (context / "new.md").write_text("ignored file")
    assert digest() == first

    assert digest(args={**args, "VERSION": "1.0.1"}) != first
    assert digest(bases={"reg/base:1": "sha256:" + "b" * 64}) != first
    assert inputs_digest(context, "docs/Dockerfile.dev", args, bases) != first

    changed = []
    (context / "sub" / "deep" / "c.txt").write_text("C")
    changed.append(digest())
    os.chmod(context / "sub" / "deep" / "c.txt", 0o755)
    changed.append(digest())
    (context / "new.txt").write_text("")
    changed.append(digest())
    (context / "link").unlink()
    (context / "link").symlink_to("b.txt")
    changed.append(digest())
    (context / ".dockerignore").write_text("*.md\nnew.txt\n")
    changed.append(digest())
    assert len({first, *changed}) == 1 + len(changed)


# -- the real engine -----------------------------------------------------------------------------

CHECKED_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY . /ctx
RUN test -f /ctx/app/main.py && test -f /ctx/logs/keep.log && test ! -e /ctx/secret.env \\
    && test ! -e /ctx/logs/debug.log && test ! -e /ctx/.dockerignore && test -L /ctx/current
"""


@pytest.mark.engine
def test_real_build_from_the_stream_shares_the_cli_cache(tmp_path: Path, engine: None) -> None:
    import docker

    context = tmp_path / "ctx"
    context.mkdir()
    shutil.copy(BUSYBOX, context / "busybox")
    (context / "Dockerfile").write_text(CHECKED_DOCKERFILE)
    (context / "app").mkdir()
    (context / "app" / "main.py").write_text(f"print({uuid.uuid4().hex!r})\n")  # a fresh COPY each run
    (context / "logs").mkdir()
    (context / "logs" / "debug.log").write_text("noise")
    (context / "logs" / "keep.log").write_text("kept")
    (context / "secret.env").write_text("TOKEN=never-sent")
    (context / "current").symlink_to("app")
    (context / ".dockerignore").write_text("secret.env\nlogs\n!logs/keep.log\n.dockerignore\n")

    api = docker.from_env(timeout=120).api
    tag = f"imgctl-test-context:{uuid.uuid4().hex[:12]}"
    try:
        stream = api.build(
            fileobj=stream_context(context, "Dockerfile"), custom_context=True, encoding=None,
            dockerfile="Dockerfile", tag=tag, rm=True, forcerm=True, decode=True,
        )
        records = list(stream)
        assert not [r for r in records if "error" in r], records
        assert any("aux" in r and r["aux"].get("ID") for r in records), records
        # The docker CLI's build of the same folder finds every step in the cache: same context.
        # (CLIs before 23.0 write other tar headers, which the classic builder's cache key includes.)
        done = subprocess.run(
            ["docker", "build", "-t", tag, str(context)], capture_output=True, text=True, timeout=300,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
        )
        assert done.returncode == 0, done.stderr
        version = subprocess.run(["docker", "--version"], capture_output=True, text=True).stdout
        if int(version.split()[2].split(".")[0]) >= 23:
            assert done.stdout.count("Using cache") == 4, done.stdout
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


# -- build_context: the labels in a generated Dockerfile ------------------------------------------

def _members(chunks: Iterator[bytes]) -> dict[str, bytes | None]:
    """name -> content (None for anything but a regular file) of a tar stream."""
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        return {m.name: tar.extractfile(m).read() if m.isfile() else None for m in tar.getmembers()}  # type: ignore[union-attr]


LABELS = {"org.opencontainers.image.version": "1.0.0"}
FOLDED = b'FROM scratch\nCOPY . /\nLABEL org.opencontainers.image.version="1.0.0"\n'


def test_build_context_without_dockerignore_adds_one_the_engine_drops_with_the_copy(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    (tmp_path / "a.txt").write_text("a")
    chunks, dockerfile, labels = build_context(tmp_path, "Dockerfile", LABELS, None)
    assert (dockerfile, labels) == (GENERATED_DOCKERFILE, {})
    assert _members(chunks) == {
        "Dockerfile": b"FROM scratch\nCOPY . /\n", "a.txt": b"a",  # the context as it is
        ".dockerignore": b".dockerignore\n.imgctl.Dockerfile\n", GENERATED_DOCKERFILE: FOLDED,
    }


@pytest.mark.parametrize(
    ("ignore", "name"),
    [
        ("*.log\n", "imgctl.log"),
        ("docs/*.md\n!keep.log\n**/*.tmp\n", "imgctl.tmp"),
        ("b.log\nnode_modules\n", "node_modules"),  # b.log is there, node_modules is not
        ("notes*\nimg?.tmp\n[ab].md\n*.md\n", "imgctl.md"),  # only plain names and *.ext are borrowed
    ],
)
def test_build_context_names_the_copy_so_the_dockerignore_leaves_it_out(ignore: str, name: str, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "b.log").write_text("b")
    (tmp_path / ".dockerignore").write_text(ignore)
    chunks, dockerfile, labels = build_context(tmp_path, "Dockerfile", LABELS, None)
    assert (dockerfile, labels) == (name, {})
    sent = _members(chunks)
    assert sent.pop(name) == FOLDED
    assert sent == _members(stream_context(tmp_path, "Dockerfile"))  # the rest as it is, .dockerignore too


def test_build_context_adds_its_name_to_a_dockerignore_that_leaves_itself_out(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "x").write_text("x")
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / ".dockerignore").write_text("cache\n.dockerignore\nDockerfile")  # no free name to borrow
    chunks, dockerfile, _ = build_context(tmp_path, "Dockerfile", LABELS, None)
    assert dockerfile == GENERATED_DOCKERFILE
    assert _members(chunks) == {  # the Dockerfile, ignored, is not sent: nothing reads it
        "a.txt": b"a", ".dockerignore": b"cache\n.dockerignore\nDockerfile\n.imgctl.Dockerfile\n", GENERATED_DOCKERFILE: FOLDED,
    }


@pytest.mark.parametrize("case", ["keeps-itself", "symlinked", "name-taken", "continues", "not-utf8"])
def test_build_context_leaves_the_labels_to_the_builder_when_the_context_would_change(case: str, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    (tmp_path / "cache").mkdir()
    if case == "keeps-itself":
        (tmp_path / ".dockerignore").write_text("cache\n")  # and no free name to borrow
    elif case == "symlinked":
        (tmp_path / "ignore").write_text(".dockerignore\ncache\n")
        (tmp_path / ".dockerignore").symlink_to("ignore")
    elif case == "name-taken":
        (tmp_path / GENERATED_DOCKERFILE).write_text("mine")
    elif case == "continues":
        (tmp_path / "Dockerfile").write_text("FROM scratch\nRUN a \\\n")
    else:
        (tmp_path / "Dockerfile").write_bytes(b"FROM scratch\n# caf\xe9\n")
    chunks, dockerfile, labels = build_context(tmp_path, "Dockerfile", LABELS, None)
    assert (dockerfile, labels) == ("Dockerfile", LABELS)
    assert b"".join(chunks) == b"".join(stream_context(tmp_path, "Dockerfile"))
