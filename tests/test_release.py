"""Tests of the ``--src`` rule shared by the preparation scripts (semiseg.data.release.find_release_folder)."""

from __future__ import annotations

from pathlib import Path

import pytest

from semiseg.data.release import find_release_folder


def _holds_case(folder: Path) -> bool:
    return (folder / "case_1").is_dir()


def _make(root: Path, *folders: str) -> Path:
    for folder in folders:
        (root / folder / "case_1").mkdir(parents=True)
    return root


def test_the_release_folder_itself_wins(tmp_path: Path, capsys) -> None:
    root = _make(tmp_path, ".", "Release")
    assert find_release_folder(root, _holds_case, "none", ("Release",)) == root
    assert capsys.readouterr().out == ""


def test_a_named_subfolder_before_the_others(tmp_path: Path, capsys) -> None:
    root = _make(tmp_path, "a_copy", "Release", "zz_other")
    assert find_release_folder(root, _holds_case, "none", ("Missing", "Release")) == root / "Release"
    assert f"using the release folder {root / 'Release'}" in capsys.readouterr().out


def test_the_one_unnamed_subfolder_holding_cases(tmp_path: Path) -> None:
    root = _make(tmp_path, "unzipped_here")
    (root / "notes").mkdir()
    assert find_release_folder(root, _holds_case, "none", ("Release",)) == root / "unzipped_here"


def test_two_unnamed_subfolders_are_ambiguous(tmp_path: Path) -> None:
    root = _make(tmp_path, "copy_a", "copy_b")
    with pytest.raises(ValueError, match=r"several folders inside --src .* hold listed cases: \['copy_a', 'copy_b'\]"):
        find_release_folder(root, _holds_case, "none", ("Release",))


def test_errors_name_the_folder_and_the_rule(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"--src folder not found: {tmp_path / 'absent'}"):
        find_release_folder(tmp_path / "absent", _holds_case, "none")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as error:
        find_release_folder(tmp_path / "empty", _holds_case, "none of the 2 listed cases is here", ("Release",))
    assert str(error.value) == (
        "none of the 2 listed cases is here; --src should be the release folder such as 'Release' or the folder "
        f"holding it, and neither {tmp_path / 'empty'} nor a folder inside it holds a listed case"
    )
