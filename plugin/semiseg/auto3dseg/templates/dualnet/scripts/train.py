"""``python scripts/train.py run --config_file=...``: train this bundle, write ``models/progress.yaml``."""

from __future__ import annotations

import fire

from semiseg.auto3dseg.train import run

__all__ = ["run"]

if __name__ == "__main__":
    fire.Fire()
