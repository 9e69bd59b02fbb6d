from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "prepare_brats.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("prepare_brats", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["prepare_brats"] = module
    spec.loader.exec_module(module)
    return module


pb = _load_script()

SHAPE = (16, 16, 8)
AFFINE = np.array([[-1.0, 0.0, 0.0, 7.0], [0.0, -1.0, 0.0, 9.0], [0.0, 0.0, 1.0, -3.0], [0.0, 0.0, 0.0, 1.0]])


def _brain_mask() -> np.ndarray:
    """An ellipsoid inside the box x 3..12, y 2..13, z 1..6, so the crop keeps some background."""
    x, y, z = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    return ((x - 7.5) / 5.0) ** 2 + ((y - 7.5) / 6.0) ** 2 + ((z - 3.5) / 3.0) ** 2 <= 1.0


def _case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    brain = _brain_mask()
    flair = np.where(brain, rng.uniform(50.0, 400.0, SHAPE), 0.0).astype(np.float32)
    seg = np.zeros(SHAPE, dtype=np.uint8)
    seg[6:9, 6:9, 3:5] = 2  # edema
    seg[7, 7, 3] = 4  # enhancing
    seg[8, 7, 4] = 1  # necrosis
    return flair, seg


def _write_case(src: Path, grade: str, case: str, seed: int, seg_shape: tuple[int, ...] | None = None,
                files: tuple[str, ...] = ("flair", "seg", "t1")) -> None:
    folder = src / grade / case
    folder.mkdir(parents=True, exist_ok=True)
    flair, seg = _case(seed)
    if seg_shape is not None:
        seg = np.zeros(seg_shape, dtype=np.uint8)
    volumes = {"flair": flair, "seg": seg, "t1": flair * 0.5}
    for name in files:
        nib.save(nib.Nifti1Image(volumes[name], AFFINE), str(folder / f"{case}_{name}.nii.gz"))


def _splits(root: Path, train: list[str], val: list[str], test: list[str]) -> Path:
    folder = root / "splits"
    folder.mkdir(parents=True, exist_ok=True)
    for name, cases in (("train", train), ("val", val), ("test", test)):
        (folder / f"{name}.txt").write_text("\n".join(cases) + "\n")
    return folder


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("brats") / "MICCAI_BraTS_2019_Data_Training"
    _write_case(src, "HGG", "BraTS19_CBICA_AAA_1", 0)
    _write_case(src, "LGG", "BraTS19_TCIA10_111_1", 1)
    _write_case(src, "HGG", "BraTS19_2013_2_1", 2)
    _write_case(src, "LGG", "BraTS19_TCIA09_222_1", 3)
    return src


def test_prepare_case_crop_zscore_and_label(release):
    image, label, affine = pb.prepare_case(release / "HGG" / "BraTS19_CBICA_AAA_1", "BraTS19_CBICA_AAA_1")
    flair, seg = _case(0)
    brain = _brain_mask()
    box = tuple(slice(int(np.flatnonzero(brain.any(axis=a)).min()), int(np.flatnonzero(brain.any(axis=a)).max()) + 1)
                for a in ((1, 2), (0, 2), (0, 1)))
    assert [(s.start, s.stop) for s in box] == [(3, 13), (2, 14), (1, 7)]
    assert image.shape == label.shape == (10, 12, 6)
    inside = brain[box]
    assert (~inside).any() and np.all(image[~inside] == 0.0)  # background kept at 0 inside the box
    assert abs(float(image[inside].mean())) < 1e-5
    assert float(image[inside].std()) == pytest.approx(1.0, abs=1e-4)  # population std
    values = flair[box][inside]
    expected = (values - values.mean()) / values.std()
    np.testing.assert_allclose(image[inside], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(label, (seg[box] > 0).astype(np.uint8))
    assert label.dtype == np.uint8 and label.sum() == 18
    np.testing.assert_allclose(affine[:3, :3], AFFINE[:3, :3])
    np.testing.assert_allclose(affine[:3, 3], [7.0 - 3.0, 9.0 - 2.0, -3.0 + 1.0])  # origin moved to voxel (3, 2, 1)


def test_prepare_brats_datalist_and_missing_cases(release, tmp_path, capsys):
    splits = _splits(
        tmp_path, ["BraTS19_TCIA10_111_1", "BraTS19_CBICA_AAA_1", "BraTS19_GONE_1"], ["BraTS19_2013_2_1"],
        ["BraTS19_TCIA09_222_1", "BraTS19_GONE_2"],
    )
    dst = tmp_path / "out"
    datalist = pb.prepare_brats(str(release), str(dst), split_dir=str(splits))
    out = capsys.readouterr().out
    assert "training: 1 listed case(s) not in this release: ['BraTS19_GONE_1']" in out
    assert "test: 1 listed case(s) not in this release: ['BraTS19_GONE_2']" in out
    assert "effective split: training 2 of 3, validation 1 of 1, test 1 of 2 listed cases" in out
    assert "[1/4] training BraTS19_TCIA10_111_1 (LGG)" in out
    content = json.loads(datalist.read_text())
    assert content["training"] == [
        {"image": "imagesTr/BraTS19_TCIA10_111_1.nii.gz", "label": "labelsTr/BraTS19_TCIA10_111_1.nii.gz"},
        {"image": "imagesTr/BraTS19_CBICA_AAA_1.nii.gz", "label": "labelsTr/BraTS19_CBICA_AAA_1.nii.gz"},
    ]
    assert content["validation"] == [
        {"image": "imagesTr/BraTS19_2013_2_1.nii.gz", "label": "labelsTr/BraTS19_2013_2_1.nii.gz"}
    ]
    assert content["test"] == [
        {"image": "imagesTs/BraTS19_TCIA09_222_1.nii.gz", "label": "labelsTs/BraTS19_TCIA09_222_1.nii.gz"}
    ]
    assert content["effective_split"] == {"training": 2, "validation": 1, "test": 1}
    assert content["listed_split"] == {"training": 3, "validation": 1, "test": 2}
    assert content["missing_cases"] == {"training": ["BraTS19_GONE_1"], "validation": [], "test": ["BraTS19_GONE_2"]}
    image = nib.load(str(dst / "imagesTr" / "BraTS19_CBICA_AAA_1.nii.gz"))
    label = nib.load(str(dst / "labelsTr" / "BraTS19_CBICA_AAA_1.nii.gz"))
    assert image.shape == label.shape == (10, 12, 6)
    np.testing.assert_allclose(image.affine[:3, 3], [4.0, 7.0, -2.0])
    np.testing.assert_allclose(label.affine, image.affine)
    assert set(np.unique(np.asanyarray(label.dataobj))) == {0, 1}
    assert image.get_data_dtype() == np.float32


def test_cli_runs_from_the_repository_root(release, tmp_path):
    splits = _splits(tmp_path, ["BraTS19_CBICA_AAA_1"], ["BraTS19_2013_2_1"], ["BraTS19_TCIA09_222_1"])
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--src", str(release), "--dst", str(tmp_path / "out"),
         "--split_dir", str(splits)],
        cwd=SCRIPT.parents[1], capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "effective split: training 1 of 1, validation 1 of 1, test 1 of 1" in result.stdout
    assert (tmp_path / "out" / "imagesTs" / "BraTS19_TCIA09_222_1.nii.gz").is_file()


def test_default_split_lists_are_the_benchmark_ones():
    lists = [pb.read_case_list(pb.DEFAULT_SPLIT_DIR / f"{name}.txt") for name in ("train", "val", "test")]
    assert [len(cases) for cases in lists] == [250, 25, 60]
    assert len(set().union(*map(set, lists))) == 335


def test_missing_flair_names_the_case(tmp_path):
    src = tmp_path / "MICCAI_BraTS_2019_Data_Training"
    _write_case(src, "HGG", "BraTS19_CBICA_AAA_1", 0)
    _write_case(src, "LGG", "BraTS19_TCIA10_111_1", 1, files=("seg", "t1"))
    splits = _splits(tmp_path, ["BraTS19_CBICA_AAA_1"], ["BraTS19_TCIA10_111_1"], ["BraTS19_GONE_1"])
    message = "case BraTS19_TCIA10_111_1: flair file not found: .*BraTS19_TCIA10_111_1_flair.nii.gz"
    with pytest.raises(FileNotFoundError, match=message):
        pb.prepare_brats(str(src), str(tmp_path / "out"), split_dir=str(splits))


def test_missing_seg_names_the_case(tmp_path):
    src = tmp_path / "MICCAI_BraTS_2019_Data_Training"
    _write_case(src, "HGG", "BraTS19_CBICA_AAA_1", 0, files=("flair",))
    with pytest.raises(FileNotFoundError, match="case BraTS19_CBICA_AAA_1: seg file not found"):
        pb.prepare_case(src / "HGG" / "BraTS19_CBICA_AAA_1", "BraTS19_CBICA_AAA_1")


def test_seg_of_another_shape_names_the_case(tmp_path):
    src = tmp_path / "MICCAI_BraTS_2019_Data_Training"
    _write_case(src, "LGG", "BraTS19_TCIA10_111_1", 1, seg_shape=(16, 16, 7))
    message = r"case BraTS19_TCIA10_111_1: segmentation shape \(16, 16, 7\) differs from the FLAIR shape \(16, 16, 8\)"
    with pytest.raises(ValueError, match=message):
        pb.prepare_case(src / "LGG" / "BraTS19_TCIA10_111_1", "BraTS19_TCIA10_111_1")


def test_release_layout_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds neither an HGG/ nor an LGG/ folder"):
        pb.find_case_folders(tmp_path)
    src = tmp_path / "MICCAI_BraTS_2019_Data_Training"
    _write_case(src, "HGG", "BraTS19_CBICA_AAA_1", 0, files=("flair",))
    _write_case(src, "LGG", "BraTS19_CBICA_AAA_1", 0, files=("flair",))
    with pytest.raises(ValueError, match="case BraTS19_CBICA_AAA_1 is in two places"):
        pb.find_case_folders(src)
    empty = tmp_path / "empty" / "HGG" / "BraTS19_CBICA_ZZZ_1"
    empty.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), AFFINE), str(empty / "BraTS19_CBICA_ZZZ_1_flair.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.uint8), AFFINE), str(empty / "BraTS19_CBICA_ZZZ_1_seg.nii.gz"))
    with pytest.raises(ValueError, match="case BraTS19_CBICA_ZZZ_1: the FLAIR volume is all zero"):
        pb.prepare_case(empty, "BraTS19_CBICA_ZZZ_1")
    splits = str(_splits(tmp_path, ["a"], ["b"], ["c"]))
    with pytest.raises(FileNotFoundError, match="none of the 3 listed cases has a patient folder"):
        pb.prepare_brats(str(tmp_path / "empty"), str(tmp_path / "out"), split_dir=splits)
    twice = str(_splits(tmp_path / "twice", ["a"], ["b"], ["a"]))
    with pytest.raises(ValueError, match=r"name these cases more than once: \['a'\]"):
        pb.prepare_brats(str(tmp_path / "empty"), str(tmp_path / "out"), split_dir=twice)
    with pytest.raises(FileNotFoundError, match="--src folder not found"):
        pb.prepare_brats(str(tmp_path / "nowhere"), str(tmp_path / "out"), split_dir=splits)


def test_src_may_be_the_folder_holding_the_release(release, tmp_path, capsys):
    splits = _splits(tmp_path, ["BraTS19_CBICA_AAA_1"], ["BraTS19_2013_2_1"], ["BraTS19_TCIA09_222_1"])
    datalist = pb.prepare_brats(str(release.parent), str(tmp_path / "out"), split_dir=str(splits))
    out = capsys.readouterr().out
    assert f"using the release folder {release}" in out
    assert "effective split: training 1 of 1, validation 1 of 1, test 1 of 1 listed cases" in out
    assert json.loads(datalist.read_text())["effective_split"] == {"training": 1, "validation": 1, "test": 1}
    renamed = tmp_path / "download" / "brats2019_train"
    _write_case(renamed, "LGG", "BraTS19_TCIA10_111_1", 1)
    (tmp_path / "download" / "notes").mkdir()
    one = _splits(tmp_path / "one", ["BraTS19_TCIA10_111_1"], ["BraTS19_GONE_1"], ["BraTS19_GONE_2"])
    pb.prepare_brats(str(tmp_path / "download"), str(tmp_path / "out2"), split_dir=str(one))
    assert f"using the release folder {renamed}" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="--src should be the release folder such as "
                       "'MICCAI_BraTS_2019_Data_Training' or the folder holding it"):
        pb.prepare_brats(str(tmp_path / "one"), str(tmp_path / "out3"), split_dir=str(one))
