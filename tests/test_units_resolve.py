"""gen-units checks its options once (units/resolve.py), then builds from the result."""

from __future__ import annotations

import pytest

from sdactivate.errors import UnitConfigError
from sdactivate.units.build import Options, build, render, resolve


@pytest.mark.parametrize(
    ("kw", "shape", "lookups"),
    [
        ({}, "plain", ["myapp"]),
        ({"supervise": True}, "supervise", ["myapp", "python3"]),
        ({"upgrader": True}, "upgrader", ["myapp"]),
        ({"ports": (), "fdstore": 2}, "fdstore-only", ["myapp"]),
        ({"accept": True}, "accept", ["myapp"]),
    ],
    ids=["plain", "supervise", "upgrader", "fdstore-only", "accept"],
)
def test_each_program_is_looked_up_once_per_build(
    kw: dict[str, object], shape: str, lookups: list[str]
) -> None:
    """resolve() classifies the shape and looks each program up once; render() of its result
    is what build() writes."""
    calls: list[str] = []

    def which(name: str) -> str | None:
        calls.append(name)
        return f"/usr/bin/{name}"

    base: dict[str, object] = {"name": "myapp", "systemd_version": 252, "ports": (8080,)}
    options = Options(**(base | kw))  # type: ignore[arg-type]
    files = build(options, which=which)
    assert calls == lookups
    resolved = resolve(options, which=which)
    assert resolved.shape == shape
    assert render(resolved) == files


def test_refusal_comes_before_any_lookup() -> None:
    """Option errors are reported before PATH is searched (a missing program does not hide
    a wrong combination)."""
    calls: list[str] = []
    with pytest.raises(UnitConfigError, match="alternatives"):
        build(
            Options(
                name="myapp", systemd_version=252, ports=(8080,), supervise=True, upgrader=True
            ),
            which=lambda name: calls.append(name) or None,  # type: ignore[func-returns-value]
        )
    assert calls == []
