"""What a release did, image by image and tag by tag: the records renderers and reports read."""

from __future__ import annotations

from dataclasses import dataclass, field

from imgctl.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK


@dataclass
class TagResult:
    reference: str
    target: str
    floating: bool
    status: str = "pending"  # pushed | unchanged | built | held | failed | pending
    digest: str | None = None
    verified: bool = False
    error: str | None = None


# deferred: a platform job leaves a single-platform image to the merge job
DONE = ("released", "built", "deferred")


@dataclass
class PlatformResult:
    """One platform of a multi-platform image: its build, and its image in the registry."""

    platform: str
    image_id: str | None = None
    size: int | None = None  # uncompressed, as the engine measures it
    layers: int | None = None
    digest: str | None = None  # its manifest, a child of the index


@dataclass
class ImageResult:
    name: str
    status: str = "pending"  # released | built | deferred | failed | skipped | interrupted | pending
    image_id: str | None = None
    size: int | None = None
    layers: int | None = None
    stored_size: int | None = None  # in the registry (compressed), after this run
    previous_size: int | None = None  # in the registry, of what the same tag held before this run
    seconds: float = 0.0
    stage: str | None = None
    error: str | None = None
    output: tuple[str, ...] = ()
    tags: list[TagResult] = field(default_factory=list)
    platforms: list[PlatformResult] = field(default_factory=list)  # none: a single-platform image

    def tag(self, reference: str) -> TagResult:
        return next(t for t in self.tags if t.reference == reference)


@dataclass
class ReleaseResult:
    images: list[ImageResult]
    floating: str = "none"  # pushed | held back: why | none
    interrupted: bool = False
    retries: int = 0

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(i.status in DONE for i in self.images)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_OK if self.ok else EXIT_FAILED


def count_failures(images: list[ImageResult]) -> str:
    failed = sum(1 for i in images if i.status == "failed")
    skipped = len(images) - failed
    parts = [f"{failed} image{'s' if failed != 1 else ''} failed"] if failed else []
    parts += [f"{skipped} skipped"] if skipped else []
    return ", ".join(parts)
