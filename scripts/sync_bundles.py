"""Write the three dataset bundles' shared configs from the Auto3DSeg template, so they never drift apart.

The template's configs (``plugin/semiseg/auto3dseg/templates/dualnet/configs``: ``train.json``, ``evaluate.json``,
``inference.json``, ``multi_gpu_train.json``, ``demo.json``, ``logging.conf``, ``ablation/*.json``) are the one
hand-edited source. Each bundle (``la``, ``pancreas``, ``brats``) is that template filled with the literature's
fixed values of its dataset (:data:`semiseg.auto3dseg.datasets.DATASETS`); Auto3DSeg fills the same template with
values derived from a new dataset's statistics. Each bundle stays self-contained (it can be zipped and shared alone).
``metadata.json``, docs and splits are written by hand per bundle.

Usage::

    python scripts/sync_bundles.py          # rewrite the bundles' configs
    python scripts/sync_bundles.py --check  # exit 1 and name the files that differ (what the tests run)
"""

from __future__ import annotations

import sys
from pathlib import Path

import fire

from semiseg.auto3dseg.datasets import DATASETS, dataset_bundle_files

REPO = Path(__file__).resolve().parent.parent

__all__ = ["derived_files", "sync"]


def derived_files(name: str) -> dict[Path, str]:
    """Target path -> content of every config of bundle ``name`` filled from the template."""
    target = REPO / "bundles" / name / "configs"
    return {target / rel: text for rel, text in dataset_bundle_files(name).items()}


def sync(check: bool = False) -> list[str]:
    """Write the bundles' configs and remove the overlays the template no longer has.

    With ``check``, only list the files that differ or are left over (exit status 1 when any is).
    """
    stale = []
    for name in DATASETS:
        for path, text in derived_files(name).items():
            if path.is_file() and path.read_text() == text:
                continue
            stale.append(str(path.relative_to(REPO)))
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        orphans = set((REPO / "bundles" / name / "configs" / "ablation").glob("*.json")) - set(derived_files(name))
        for path in sorted(orphans):  # an overlay the template no longer has
            stale.append(str(path.relative_to(REPO)))
            if not check:
                path.unlink()
    if check and stale:
        print("out of sync with the Auto3DSeg template (run python scripts/sync_bundles.py):\n  " + "\n  ".join(stale))
        sys.exit(1)
    return stale


if __name__ == "__main__":
    fire.Fire(sync)
