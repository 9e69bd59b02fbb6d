"""Zip a bundle the way the MONAI model zoo distributes it: ``<name>/configs``, ``<name>/models/model.pt``, docs.

Files over the size limit (25 MB by default, the zoo's rule) are left out of the zip and listed in
``<name>/large_files.yml`` with their size and SHA-256, so they can be hosted beside the zip.

Usage::

    python scripts/package_bundle.py la --output dist/la.zip [--ckpt bundles/la/models/model.pt]
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import fire
import yaml

REPO = Path(__file__).resolve().parent.parent
SKIP_DIRS = {"eval", "demo", "runs", "logs", "state", "__pycache__", "phantoms", "output"}

__all__ = ["package_bundle"]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_bundle(name: str, output: str | None = None, ckpt: str | None = None, max_mb: float = 25.0) -> Path:
    """Write the bundle ``bundles/<name>`` as a zip that unpacks to ``<name>/...``.

    Args:
        name: bundle folder under ``bundles/``.
        output: zip path; default ``dist/<name>.zip``.
        ckpt: the trained weights to ship as ``models/model.pt`` (state_dict of ``network_def``); default the
            bundle's own ``models/model.pt``.
        max_mb: files larger than this go to ``large_files.yml`` instead of the zip.

    Raises:
        FileNotFoundError: when the bundle or the checkpoint does not exist.
    """
    root = REPO / "bundles" / name
    if not (root / "configs" / "metadata.json").is_file():
        raise FileNotFoundError(f"no bundle at {root} (expected configs/metadata.json)")
    ckpt_path = Path(ckpt) if ckpt else root / "models" / "model.pt"
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"no trained weights at {ckpt_path}: train the bundle first or pass --ckpt")
    out = Path(output) if output else REPO / "dist" / f"{name}.zip"
    out.parent.mkdir(parents=True, exist_ok=True)
    files = {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}
    files = {k: v for k, v in files.items() if not (set(Path(k).parts[:-1]) & SKIP_DIRS) and not k.startswith("models/")}
    files.pop("large_files.yml", None)  # rewritten below with what this zip leaves out
    files["models/model.pt"] = ckpt_path
    large = []
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for arcname, path in files.items():
            size = path.stat().st_size
            if size > max_mb * 1e6:
                large.append({"path": arcname, "size_bytes": size, "hash_val": _sha256(path), "hash_type": "sha256",
                              "url": f"<upload {arcname} and put its download address here>"})  # fmt: skip
                continue
            archive.write(path, f"{name}/{arcname}")
        archive.writestr(f"{name}/large_files.yml", yaml.safe_dump({"large_files": large}, sort_keys=False))
    print(f"wrote {out} ({len(files) - len(large)} files; {len(large)} listed in large_files.yml)")
    return out


if __name__ == "__main__":
    fire.Fire(package_bundle)
