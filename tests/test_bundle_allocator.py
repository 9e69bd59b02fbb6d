from __future__ import annotations

import platform

import pytest

from semiseg.bundle import ALLOCATOR_ENV, keep_freed_memory
from semiseg.bundle import allocator

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")


@glibc
def test_every_setting_is_applied_without_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ALLOCATOR_ENV:
        monkeypatch.delenv(name, raising=False)
    assert keep_freed_memory() == {name: int(value) for name, value in ALLOCATOR_ENV.items()}


@glibc
def test_a_variable_the_user_set_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ALLOCATOR_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MALLOC_TOP_PAD_", "1234")
    assert set(keep_freed_memory()) == set(ALLOCATOR_ENV) - {"MALLOC_TOP_PAD_"}


def test_without_a_c_library_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator.ctypes.util, "find_library", lambda name: None)
    assert keep_freed_memory() == {}


def test_values_fit_mallopt_and_the_bundles_call_it() -> None:
    import json
    from pathlib import Path

    assert all(0 < int(value) < 2**31 for value in ALLOCATOR_ENV.values())  # mallopt takes a C int
    bundles = Path(__file__).resolve().parent.parent / "bundles"
    for bundle in ("la", "pancreas", "brats"):
        train = json.loads((bundles / bundle / "configs" / "train.json").read_text())
        assert "$semiseg.bundle.keep_freed_memory()" in train["initialize"]
