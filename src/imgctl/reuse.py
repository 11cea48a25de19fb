"""--skip-unchanged: the digest of everything an image's build reads, and whether every
registry it goes to already holds a build of exactly that."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from imgctl.dockerfile import split_reference
from imgctl.engine import Engine
from imgctl.errors import ImgctlError
from imgctl.events import BuildDone, BuildOutput, Event, Reused
from imgctl.plan import OCI, Plan, PlannedImage
from imgctl.indexes import platform_digests
from imgctl.platforms import Platform
from imgctl.pulls import Pulls
from imgctl.multiplatform import platform_tag
from imgctl.registries import Registries
from imgctl.registry import RegistryClient
from imgctl.results import ImageResult, PlatformResult
from imgctl.snapshot import Snapshot, snapshot

INPUTS_LABEL = "io.imgctl.inputs"  # digest of everything a build read: --skip-unchanged compares it


class Reuse:
    def __init__(
        self, plan: Plan, engine: Engine, registries: Registries, pulls: Pulls, results: dict[str, ImageResult],
        emit: Callable[[Event], None], in_registry: dict[tuple[str, str, str], str],
    ) -> None:
        self.plan = plan
        self.engine = engine
        self.registries = registries
        self.pulls = pulls
        self.results = results
        self.emit = emit
        self.in_registry = in_registry  # (image, registry, repository) -> digest whose inputs match, for the publisher
        self.reused: set[str] = set()
        self._external: dict[str, str | None] = {}  # an external base -> its digest in the registry, once per run
        self._lock = threading.Lock()

    def inputs(self, image: PlannedImage, platforms: Sequence[Platform | None] = (None,), *, keep: str = "none") -> Snapshot | None:
        """One walk of the image's context: the digest of everything its build (for each of
        `platforms`) reads, and its tar kept as `keep` says (snapshot.py); None when a base
        image's digest is unknown."""
        facts = []
        for platform in platforms:
            known = self._facts(image, platform)
            if known is None:
                return None
            facts.append(known)
        try:
            return snapshot(image.context, image.dockerfile, facts, keep=keep)
        except ImgctlError:
            return None  # the build will report the problem

    def _facts(self, image: PlannedImage, platform: Platform | None) -> tuple[dict[str, str], dict[str, str]] | None:
        """(what the build is given, the base images' digests) for the inputs digest."""
        bases: dict[str, str] = {}
        resolved: dict[str, str] = {}  # a base as the FROM line names it -> the image it is
        for base in image.bases:
            digest = self._base_digest(base, platform)
            if digest is None:
                return None
            bases[split_reference(base)[1]] = digest
            resolved[base] = digest
        # created and version change on every run without changing the image: leave them out, so a
        # reused image keeps the labels of the build it came from.
        labels = {k: v for k, v in image.labels.items() if k not in (OCI + "created", OCI + "version")}
        # A build arg naming a base counts as the image it names, not as its text: `base:1.0.1`
        # is the very image `base:1.0.0` was when base did not change.
        facts = {f"arg:{k}": f"image {resolved[v]}" if v in resolved else v for k, v in image.build_args.items()}
        facts |= {f"label:{k}": v for k, v in labels.items()} | {"target": image.target or ""}
        if platform is not None:
            facts["platform"] = str(platform)
        return facts, bases

    def local_build(self, image: PlannedImage, inputs: str) -> str | None:
        """The id of the local image this build would make again, if there is one: tagged as the
        image, with every label the build gives it, its inputs digest included. A build whose
        every step is cached gives that very image; the engine would spend 0.2-0.5 s on each
        (BuildKit's, with a few at once) to say so. None: build. An image with inline_cache always
        builds: the cache metadata BuildKit writes into it is in neither its labels nor its inputs."""
        if image.inline_cache:
            return None
        details = self.engine.inspect(image.tags[0].reference) if image.tags else {}
        labels = (details.get("Config") or {}).get("Labels") or {}
        wanted = {**image.labels, INPUTS_LABEL: inputs}
        found = details.get("Id")
        if not isinstance(found, str) or any(labels.get(k) != v for k, v in wanted.items()):
            return None
        self.emit(BuildOutput(image=image.name, line=f"the local image {found[:19]} was built from these very inputs: kept as it is"))
        self.emit(BuildDone(image=image.name, image_id=found, seconds=0.0))
        return found

    def find_same(self, image: PlannedImage, inputs: str) -> bool:
        """True if every registry already holds an image of this one's tags built from the same inputs."""
        found: dict[tuple[str, str], str] = {}  # every repository must hold it: a tag is added there
        image_id: str | None = None
        for tag in image.tags + image.held_back:
            if (tag.target, tag.api_path) in found:
                continue
            try:
                seen = self.registries.client(tag).inputs_of(tag.api_path, tag.tag, INPUTS_LABEL)
            except ImgctlError:
                seen = None
            if seen and seen[2] == inputs:
                found[tag.target, tag.api_path] = seen[0]
                image_id = image_id or seen[1]
        if {(t.target, t.api_path) for t in image.tags} - set(found):
            return False
        self.results[image.name].image_id = image_id
        for (target, path), digest in found.items():
            self.in_registry[(image.name, target, path)] = digest
        self.reused.add(image.name)
        self.emit(Reused(image=image.name, inputs=inputs))
        return True

    def find_same_index(self, image: PlannedImage, inputs: dict[Platform, str]) -> bool:
        """find_same for a multi-platform image: every repository's tag holds an index whose child
        for each platform was built from that platform's inputs (each child's config carries its own)."""
        found: dict[tuple[str, str], str] = {}
        children: dict[str, tuple[str, str]] = {}  # platform -> (manifest digest, image id), of the first repository
        for tag in image.tags + image.held_back:
            if (tag.target, tag.api_path) in found:
                continue
            client = self.registries.client(tag)
            try:
                digests = platform_digests(client, tag.api_path, tag.tag)
                seen = {str(p): client.inputs_of(tag.api_path, digests[str(p)], INPUTS_LABEL) if str(p) in digests else None
                        for p in image.platforms}
                index = client.manifest_digest(tag.api_path, tag.tag)
            except ImgctlError:
                continue
            if index and all(seen[str(p)] and seen[str(p)][2] == inputs[p] for p in image.platforms):  # type: ignore[index]
                found[tag.target, tag.api_path] = index
                for platform, got in seen.items():
                    assert got is not None
                    children.setdefault(platform, (got[0], got[1]))
        if {(t.target, t.api_path) for t in image.tags} - set(found):
            return False
        result = self.results[image.name]
        result.platforms = [PlatformResult(str(p), image_id=children[str(p)][1], digest=children[str(p)][0])
                            for p in image.platforms]
        result.image_id = result.platforms[0].image_id
        for (target, path), digest in found.items():
            self.in_registry[(image.name, target, path)] = digest
        self.reused.add(image.name)
        self.emit(Reused(image=image.name, inputs=",".join(inputs[p] for p in image.platforms)))
        return True

    def fetch_reused_bases(self, image: PlannedImage) -> None:
        """A base that --skip-unchanged reused was never built here: pull it, with its registry's credentials."""
        for dep in image.depends_on:
            if dep not in self.reused:
                continue
            if self.plan.image(dep).platforms:
                self._fetch_reused_platforms(image, self.plan.image(dep))
                continue
            for base in image.bases:
                tag = next((t for t in self.plan.image(dep).tags if split_reference(t.reference) == split_reference(base)), None)
                if tag and self.engine.local_image_id(base) is None:
                    self.pulls.pull_once(image.name, base, self.registries.creds(tag.target), what="pull the reused base")

    def _fetch_reused_platforms(self, image: PlannedImage, dep: PlannedImage) -> None:
        """Each platform of a reused multi-platform base, pulled by its digest and tagged locally
        as that platform's build would have been (`TAG-os-arch`), for this image's builds FROM it."""
        tag = dep.tags[0]
        for platform, found in zip(dep.platforms, self.results[dep.name].platforms):
            local = platform_tag(tag, platform)
            if found.digest is None or self.engine.local_image_id(local.reference) is not None:
                continue
            self.pulls.pull_once(image.name, f"{tag.repository}@{found.digest}", self.registries.creds(tag.target),
                                 what="pull the reused base")
            if found.image_id and self.engine.local_image_id(found.image_id):
                for each in dep.tags:
                    self.engine.tag(found.image_id, platform_tag(each, platform))

    def _base_digest(self, base: str, platform: Platform | None) -> str | None:
        """The image id of a base image: for an image of this run, the one it built or reused (its
        dependents build once it is built, before any push), for `platform` if it has several;
        else the local image's."""
        repository = split_reference(base)
        for image in self.plan.images:
            result = self.results[image.name]
            if any(split_reference(r.reference) == repository for r in result.tags):
                same = [p for p in result.platforms if p.platform == str(platform)]
                return same[0].image_id if same else result.image_id
        return self._external_digest(base) or self.engine.local_image_id(base)

    def _external_digest(self, base: str) -> str | None:
        """What the registry says an external base is now (a fresh CI runner has no local copy,
        and a local copy may be stale); None when it cannot say."""
        if "@" in base:
            return base.partition("@")[2]
        host, path = split_reference(base)
        tail = base.rsplit("/", 1)[-1]
        tag = tail.rsplit(":", 1)[1] if ":" in tail else "latest"
        with self._lock:
            if base not in self._external:
                try:
                    client = RegistryClient(host, self.registries.creds_for(base))
                    self._external[base] = client.manifest_digest(path, tag)
                except ImgctlError:
                    self._external[base] = None
            return self._external[base]
