"""requirements.lock, the versions the image installs, is in step with pyproject.toml.

The Dockerfile installs the lock with `--no-deps`, so a dependency pyproject.toml gains but the
lock lacks would be missing from the image (its `pip check` fails the build), and a pin outside
pyproject's range would ship a version the code does not claim to support.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# The image's interpreter: Python 3.11 on Linux (python:3.11-slim, Debian bookworm).
IMAGE_ENV = {
    **default_environment(),
    "python_version": "3.11",
    "python_full_version": "3.11.2",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_python_implementation": "CPython",
    "implementation_name": "cpython",
    "os_name": "posix",
    "extra": "",
}


def pins() -> dict[str, str]:
    """name -> version for every `name==version` line; anything else is an error."""
    found = {}
    for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([A-Za-z0-9.+!-]+)", line)
        assert match, f"requirements.lock: not an exact pin: {line!r}"
        name = canonicalize_name(match.group(1))
        assert name not in found, f"requirements.lock: {name} pinned twice"
        found[name] = match.group(2)
    return found


def direct_requirements() -> list[Requirement]:
    """pyproject's runtime dependencies and what building the exporter needs."""
    listed = PYPROJECT["project"]["dependencies"] + PYPROJECT["build-system"]["requires"]
    return [Requirement(text) for text in listed]


def closure() -> set[str]:
    """The runtime dependencies and theirs, by name, from the installed distributions' metadata."""
    seen: set[str] = set()
    todo = [r for r in direct_requirements() if r.marker is None or r.marker.evaluate(IMAGE_ENV)]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        for text in metadata.requires(requirement.name) or []:
            child = Requirement(text)
            if child.marker is None or child.marker.evaluate(IMAGE_ENV):
                todo.append(child)
    return seen


def test_every_direct_dependency_is_pinned_within_its_range() -> None:
    pinned = pins()
    for requirement in direct_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"requirements.lock does not pin {requirement.name}"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"requirements.lock pins {name}=={pinned[name]}, outside pyproject's {requirement}"
        )


def test_the_lock_pins_exactly_the_dependency_closure() -> None:
    # Computed from the metadata installed here; after changing a pin, reinstall to compare.
    wanted, pinned = closure(), set(pins())
    assert not wanted - pinned, f"needed but not pinned: {sorted(wanted - pinned)}"
    assert not pinned - wanted, f"pinned but needed by nothing: {sorted(pinned - wanted)}"


def test_the_dockerfile_installs_the_lock_and_nothing_unpinned() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    installs = re.findall(r"pip install ([^&]*)", dockerfile.replace("\\\n", " "))
    assert installs, "the Dockerfile installs nothing with pip"
    for install in installs:
        assert "--no-deps" in install.split(), f"an install may pull unpinned versions: {install}"
    assert any("--requirement requirements.lock" in " ".join(i.split()) for i in installs)
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert "!requirements.lock" in ignored, ".dockerignore keeps the lock out of the build"
