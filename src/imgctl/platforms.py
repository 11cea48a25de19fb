"""Platforms as the OCI image spec names them: `os/arch[/variant]` (`linux/arm/v7`).

Pure: parsing, the build args BuildKit sets itself (and the classic builder does not), and the
suffix that names one platform's image among an index's children.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PART = re.compile(r"^[a-z0-9][a-z0-9._-]*\Z")
# What `docker buildx` and containerd's platforms package accept as shorthands.
_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm", "armel": "arm"}
_DEFAULT_VARIANT = {"arm64": "v8"}  # containerd normalises arm64/v8 to arm64 (no variant)


class PlatformError(ValueError):
    """Not `os/arch[/variant]`."""


@dataclass(frozen=True, order=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().lower().split("/")
        if not 2 <= len(parts) <= 3 or not all(_PART.match(p) for p in parts):
            raise PlatformError(f"{text!r} is not a platform: write os/arch or os/arch/variant, e.g. linux/arm64 or linux/arm/v7")
        os_, arch = parts[0], _ARCH_ALIASES.get(parts[1], parts[1])
        variant = parts[2] if len(parts) == 3 else ""
        if variant == _DEFAULT_VARIANT.get(arch):
            variant = ""
        return cls(os_, arch, variant)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @property
    def suffix(self) -> str:
        """`linux-arm-v7`: what a tag carries to name this platform's image."""
        return "-".join(p for p in (self.os, self.architecture, self.variant) if p)

    def as_oci(self) -> dict[str, str]:
        """The `platform` object of an image index entry."""
        found = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            found["variant"] = self.variant
        return found

    def build_args(self, build: Platform) -> dict[str, str]:
        """TARGETPLATFORM and friends, as BuildKit defines them, for a build on `build`."""
        return {
            "TARGETPLATFORM": str(self), "TARGETOS": self.os, "TARGETARCH": self.architecture,
            "TARGETVARIANT": self.variant,
            "BUILDPLATFORM": str(build), "BUILDOS": build.os, "BUILDARCH": build.architecture,
            "BUILDVARIANT": build.variant,
        }


def parse_list(values: list[str] | tuple[str, ...]) -> tuple[Platform, ...]:
    """Platforms from flags or config entries, each possibly a comma list; duplicates dropped."""
    found: list[Platform] = []
    for value in values:
        for text in value.split(","):
            if text.strip():
                platform = Platform.parse(text)
                if platform not in found:
                    found.append(platform)
    return tuple(found)
