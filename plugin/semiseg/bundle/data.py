"""The data of a bundle run: its datalist file read once, the lists the configs use, and the dataset check.

The bundle configs declare one ``data`` object (``semiseg.bundle.BundleData``) and read its lists::

    "train#dataset#data":           "$@data.labeled"
    "train#unlabeled_dataset#data": "$@data.unlabeled(@train#dataset#data, @validate#dataset#data)"
    "validate#dataset#data":        "$@data.validation(@train#dataset#data)"
    "test#dataset#data":            "$@data.test"

On the command line the datalist file exists and every list comes from it. MONAI Label's ``BundleTrainTask`` has no
datalist file: it overrides ``train#dataset#data`` with the labeled pairs of its datastore (and
``validate#dataset#data`` from its ``val_split``). The same object then takes its other branch: the unlabeled cases
are the images without a label beside the labeled ones, there is no test list, and validation is what MONAI Label
set (none for ``val_split`` -1). A run that reads the labeled cases of a missing datalist stops with directions.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from semiseg.arguments import flag
from semiseg.data.checks import assert_valid_dataset, assert_valid_test_cases
from semiseg.data.datalist import SemiSupervisedDatalist, read_json_file, split_datalist, unlabeled_from_images

from .dataset import IMAGE_PATTERNS, DatasetNotFoundError, require_cases
from .unlabeled import extra_unlabeled_images, images_in_folders

__all__ = ["BundleData"]

logger = logging.getLogger(__name__)


class BundleData:
    """The labeled, unlabeled, validation and test cases of a bundle run, from one reading of its datalist file.

    Args:
        datalist: path of the MSD-style datalist JSON (see :func:`semiseg.data.load_semisupervised_datalist`). It is
            read and split once, here, when the file exists; without it (MONAI Label hands the labeled pairs) the
            lists that need it are empty and :attr:`labeled` stops with directions.
        dataset_dir: folder that the datalist's relative paths start from.
        num_labeled: labeled training cases that keep their label (the first ones); the other training cases are
            unlabeled. None keeps every label (the fully supervised setting).
        unlabeled_images: more unlabeled images: image files, folders of images, or JSON lists (see
            :func:`semiseg.bundle.extra_unlabeled_images`).
        bundle_name: the bundle (``la``, ``pancreas``, ``brats``), named in the directions.
        num_classes: classes, background included; label values must lie in ``[0, num_classes)``.
        check: check the cases' files in :meth:`check` and :meth:`check_test` (``check_data`` of the configs; text
            from the command line such as ``"false"`` is read as a boolean).
        check_values: read the voxel values in those checks too, not only the headers.
        patterns: file name patterns of images when folders are searched.

    Attributes:
        split: the datalist file's four lists, or None when there is no file.

    Raises:
        FileNotFoundError, ValueError: when the datalist file exists but cannot be read or split (invalid JSON, no
            ``training`` list, ``num_labeled`` out of range, ...), with the file's name.
    """

    def __init__(
        self,
        datalist: str | os.PathLike | None,
        dataset_dir: str | os.PathLike | None = None,
        num_labeled: int | None = None,
        unlabeled_images: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
        bundle_name: str = "la",
        num_classes: int = 2,
        check: bool | str = True,
        check_values: bool | str = True,
        patterns: Sequence[str] = IMAGE_PATTERNS,
    ) -> None:
        self.datalist = datalist
        self.dataset_dir = dataset_dir
        self.unlabeled_images = unlabeled_images
        self.bundle_name = bundle_name
        self.num_classes = num_classes
        self.check_files = flag(check, "check_data")
        self.check_values = flag(check_values, "check_values")
        self.patterns = tuple(patterns)
        path = Path(datalist).expanduser().resolve() if datalist is not None else None
        self.split: SemiSupervisedDatalist | None = None
        if path is not None and path.is_file():
            self.split = split_datalist(read_json_file(path), path, dataset_dir, num_labeled)
            logger.info("datalist %s: %s", path, self.split.summary())

    @property
    def labeled(self) -> list[dict]:
        """The datalist's labeled training cases ``[{"image": ..., "label": ...}, ...]``.

        Raises:
            DatasetNotFoundError: when there is no datalist file; the message says how to prepare the data or run
                the phantom demo.
        """
        return self._split().labeled

    @property
    def test(self) -> list[dict]:
        """The datalist's test cases; none without a datalist file (MONAI Label has no test list).

        Raises:
            DatasetNotFoundError: when the datalist file lists no test case.
        """
        if self.split is None:
            return []
        return require_cases(self.split.test, "test", os.fspath(self.datalist))

    def validation(self, labeled: Sequence[dict]) -> list[dict]:
        """The validation cases for the labeled training cases ``labeled``.

        With a datalist file: its ``validation`` list, or, when it lists none, ``labeled`` (validation then only
        follows the fit). Without one the labeled cases were handed in by a tool: MONAI Label sets
        ``validate#dataset#data`` itself from ``val_split`` (``[]`` for ``val_split`` 0); with ``val_split`` -1 ("the
        bundle's own list") there is none, and training runs without validation (the bundle's ``ValidationHandler``
        is disabled for an empty list) instead of stopping for the missing datalist.
        """
        if self.split is None:
            logger.info("no datalist (%s): training runs without validation cases", self.datalist)
            return []
        return self.split.validation or list(labeled)

    def unlabeled(self, labeled: Sequence[dict], validation: Sequence[dict] | None = None) -> list[dict]:
        """The unlabeled training cases ``[{"image": path}, ...]`` beside the labeled cases ``labeled``.

        With a datalist file, its unlabeled cases; without one (MONAI Label), the image files in the folders of the
        labeled images (a local datastore keeps its images in one folder and their labels in ``labels/final/``
        below it). In both cases followed by :attr:`unlabeled_images`. An image of ``labeled`` or ``validation`` is
        never unlabeled.

        Returns:
            Unlabeled cases with absolute image paths, in a stable order, without duplicates.

        Raises:
            ValueError: when ``labeled`` is not a list of dicts with an ``"image"``.
            FileNotFoundError: when an entry of :attr:`unlabeled_images` does not exist.
        """
        labeled = list(labeled or [])
        for index, case in enumerate(labeled):
            if not isinstance(case, dict) or not isinstance(case.get("image"), (str, os.PathLike)):
                raise ValueError(f"labeled case {index} must be a dict with an 'image' path, got {case!r}")
        if self.split is not None:
            images = [case["image"] for case in self.split.unlabeled]
            source = f"the datalist {os.fspath(self.datalist)!r}"
        else:
            folders = sorted({os.path.dirname(os.path.abspath(os.fspath(case["image"]))) for case in labeled})
            images = images_in_folders(folders, self.patterns)
            source = f"the images without a label beside the labeled ones ({', '.join(folders) or 'no folder'})"
        images += extra_unlabeled_images(self.unlabeled_images, self.patterns)
        taken = labeled + [case for case in validation or [] if isinstance(case, dict) and "image" in case]
        cases = unlabeled_from_images([os.path.abspath(os.fspath(image)) for image in images], taken)
        logger.info(
            "unlabeled cases: %d from %s and the extra list; %d labeled cases", len(cases), source, len(labeled)
        )
        if not cases:
            logger.warning(
                "no unlabeled case found (%s): training is supervised only; add unlabeled images to the datastore "
                "or list them in 'unlabeled_images'",
                source,
            )
        return cases

    def check(
        self, labeled: Sequence[dict], unlabeled: Sequence[dict], validation: Sequence[dict], test: Sequence[dict]
    ) -> None:
        """Check the files of every list a training run reads (when ``check`` is on); one error lists all problems.

        Raises:
            semiseg.data.DatasetError: see :func:`semiseg.data.assert_valid_dataset`.
        """
        if self.check_files:
            lists = SemiSupervisedDatalist(list(labeled), list(unlabeled), list(validation), list(test))
            assert_valid_dataset(lists, self.num_classes, check_values=self.check_values)

    def check_test(self, test: Sequence[dict]) -> None:
        """Check the files of the test cases alone, what evaluation reads (when ``check`` is on).

        Raises:
            DatasetNotFoundError: when there is no test case: without a datalist file, with directions.
            semiseg.data.DatasetError: see :func:`semiseg.data.assert_valid_test_cases`.
        """
        if not test:
            if self.split is None:
                self._split()
            raise DatasetNotFoundError("no test case to evaluate: test#dataset#data is empty.")
        if self.check_files:
            assert_valid_test_cases(test, self.num_classes, check_values=self.check_values)

    def _split(self) -> SemiSupervisedDatalist:
        if self.split is not None:
            return self.split
        configs = f"bundles/{self.bundle_name}/configs"
        raise DatasetNotFoundError(
            f"no datalist at {self.datalist!r} (dataset_dir={self.dataset_dir!r}).\n"
            f"  To train on the {self.bundle_name.upper()} benchmark, prepare it first:\n"
            f"    python scripts/prepare_{self.bundle_name}.py --src <release folder> --dst <data folder>\n"
            f"  then run with --dataset_dir <data folder> --datalist <data folder>/datalist.json\n"
            f"  (see bundles/{self.bundle_name}/docs/README.md). "
            "To try the method without data, run the phantom demo:\n"
            f"    python -m monai.bundle run --config_file \"['{configs}/train.json','{configs}/demo.json']\""
        )
