"""Check a dataset before training: print a summary and every problem; exit with status 1 when there is any.

Usage (from the repository root)::

    python scripts/check_dataset.py --datalist /data/la/datalist.json [--dataset_dir /data/la] [--num_classes 2] \
        [--num_labeled 8] [--check_values true]
"""

from __future__ import annotations

import logging
import sys

import fire

from semiseg.data.checks import DatasetError, assert_valid_dataset
from semiseg.data.datalist import load_semisupervised_datalist

__all__ = ["check_dataset", "main"]


def check_dataset(
    datalist: str,
    dataset_dir: str | None = None,
    num_classes: int = 2,
    num_labeled: int | None = None,
    check_values: bool = True,
) -> int:
    """Load the datalist, check every case, print a summary and the problems; return the number of problems.

    Args:
        datalist: MSD-style datalist JSON.
        dataset_dir: folder that relative paths start from; default the datalist's folder.
        num_classes: number of classes, background included.
        num_labeled: how many labeled training cases keep their labels (default: all).
        check_values: read voxel values as well as headers.
    """
    try:
        lists = load_semisupervised_datalist(datalist, dataset_dir=dataset_dir, num_labeled=num_labeled)
    except (FileNotFoundError, ValueError) as error:
        print(f"cannot load the datalist: {error}")
        return 1
    print(f"datalist {datalist}: {lists.summary()}")
    try:
        assert_valid_dataset(lists, num_classes=num_classes, check_values=check_values)
    except DatasetError as error:
        print(error)
        return len(error.problems)
    print("no problem found")
    return 0


def main(
    datalist: str,
    dataset_dir: str | None = None,
    num_classes: int = 2,
    num_labeled: int | None = None,
    check_values: bool = True,
) -> None:
    """Command-line entry: run :func:`check_dataset` and exit with status 1 on any problem."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    sys.exit(1 if check_dataset(datalist, dataset_dir, num_classes, num_labeled, check_values) else 0)


if __name__ == "__main__":
    fire.Fire(main)
