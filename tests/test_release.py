"""Tests of semiseg.data.release: the ``--src`` rule shared by the preparation scripts (``find_release_folder``) and
the atomic writes of volumes and datalists."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from semiseg.data import release
from semiseg.data.release import find_release_folder, save_volume, write_datalist


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


def test_a_volume_write_that_fails_leaves_the_previous_file_whole(tmp_path: Path, monkeypatch) -> None:
    path = save_volume(np.ones((4, 5, 6), dtype=np.float32), tmp_path / "case.nii.gz")

    def crash_half_way(image: nib.Nifti1Image, filename: str) -> None:
        Path(filename).write_bytes(b"\x1f\x8b half a gzip stream")
        raise OSError("disk full")

    monkeypatch.setattr(release.nib, "save", crash_half_way)
    with pytest.raises(OSError, match="disk full"):
        save_volume(np.zeros((4, 5, 6), dtype=np.float32), path)
    assert np.asarray(nib.load(path).dataobj).min() == 1.0  # the first volume, readable
    assert [p.name for p in tmp_path.iterdir()] == ["case.nii.gz"]  # no temporary file left


def test_datalist_is_replaced_whole(tmp_path: Path, monkeypatch) -> None:
    entry = {"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"}
    path = write_datalist(tmp_path, training=[entry])
    first = path.read_text()
    monkeypatch.setattr(release.os, "replace", lambda src, dst: (_ for _ in ()).throw(OSError("interrupted")))
    with pytest.raises(OSError, match="interrupted"):
        write_datalist(tmp_path, training=[entry, entry])
    assert path.read_text() == first and [p.name for p in tmp_path.iterdir()] == ["datalist.json"]
