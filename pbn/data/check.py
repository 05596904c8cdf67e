"""Check a data root before training: `python -m pbn.data.check --data {mpii,lsp} --data-root DIR`.

For the train and the validation (LSP: test) split, read as training reads them (readers.split_records, the
function pbn.data.dataset.load_source calls, then train_limit / val_limit):
  - every annotation file is well formed (one message per bad file, not just the first);
  - every referenced image exists and decodes completely. OpenCV 4 decodes a truncated JPEG without an
    error (the missing part comes out grey; libjpeg only prints "Premature end of JPEG file"), so a JPEG
    must also have an end-of-image marker (FF D9) after its last start-of-scan (FF DA): neither pair can
    occur inside entropy-coded data. A PNG must have its IEND chunk. Any other file must decode;
  - each split holds at least one batch: train >= batch_size people (the training loader drops the last
    partial batch), validation >= 1.
Every bad file is listed, one line each, then a summary; exit 2 if anything is bad.

Images are checked in parallel threads (cv2.imdecode and file reads release the GIL; threads beat
processes here, see benchmarks/data_check.py), and each verdict is cached under $PBN_CACHE (default
~/.cache/pbn-search) keyed by (path, size, mtime_ns), so a second run over unchanged files only stats them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from pbn.atomic import atomic_write_text
from pbn.config import PRESETS
from pbn.data import readers
from pbn.data.records import DataError, PoseRecord, limit_records

CHECK_VERSION = 1  # bump when a verdict's rules change: older cache files are then ignored
FIRST_SHOWN = 3  # bad files named in require_valid_data's message
_CHUNK = 32  # images per thread task

_PNG = b"\x89PNG\r\n\x1a\n"

log = logging.getLogger(__name__)


@dataclass
class DataReport:
    """What check_data found. bad: (path, reason) for every bad file, annotation problems first;
    counts: people per split after the limits ("train" and "valid"; LSP's "valid" is its test split);
    images: distinct image files checked; cached: verdicts taken from the cache; seconds: wall time."""

    data: str
    root: str
    bad: list[tuple[str, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    images: int = 0
    cached: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.bad

    def summary(self) -> str:
        if self.data == "synthetic":
            return "synthetic data: nothing to check"
        splits = ", ".join(f"{k} {v} people" for k, v in self.counts.items())
        state = f"{len(self.bad)} bad file(s)" if self.bad else "all good"
        return (f"{self.data} under {self.root}: {splits or 'no split readable'}; {self.images} image(s) checked "
                f"({self.cached} cached) in {self.seconds:.2f} s: {state}")


# ---------------------------------------------------------------------------------------- images
def jpeg_problem(data: bytes) -> str | None:
    """Why a JPEG (starting FF D8) is incomplete, or None. Walks the header segments to the first
    start-of-scan (so an EXIF thumbnail's markers are skipped), then needs an end-of-image marker after
    the last start-of-scan."""
    i, n = 2, len(data)
    while True:
        i = data.find(b"\xff", i)
        if i < 0 or i + 1 >= n:
            return "truncated JPEG (ends before its image data)"
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xDA:
            break
        if marker == 0xD9:
            return "corrupt JPEG (end-of-image marker before any image data)"
        if marker in (0x00, 0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # standalone markers (00: a stray byte)
            i += 2
            continue
        if i + 4 > n:
            return "truncated JPEG (ends before its image data)"
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    last_sos = data.rfind(b"\xff\xda")
    if data.find(b"\xff\xd9", last_sos + 2) < 0:
        return "truncated JPEG (no end-of-image marker)"
    return None


def image_problem(data: bytes) -> str | None:
    """Why these bytes are not a complete image, or None. JPEGs decode at 1/8 size (all of the entropy-coded
    data is still read, which is what can fail), PNGs and other formats at full size."""
    if not data:
        return "empty file"
    if data[:3] == b"\xff\xd8\xff":
        problem = jpeg_problem(data)
        if problem:
            return problem
        flag, kind = cv2.IMREAD_REDUCED_GRAYSCALE_8, "JPEG"
    elif data[:8] == _PNG:
        if data.rfind(b"IEND") < 0:
            return "truncated PNG (no IEND chunk)"
        flag, kind = cv2.IMREAD_GRAYSCALE, "PNG"
    else:
        flag, kind = cv2.IMREAD_GRAYSCALE, None
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    except cv2.error as e:
        img, kind = None, f"{kind or 'image'} ({str(e).strip().splitlines()[-1]})"
    if img is None or img.size == 0:
        return f"corrupt {kind}: OpenCV cannot decode it" if kind else "not an image (OpenCV cannot decode it)"
    return None


def check_image(path: str) -> tuple[int, int, str | None] | None:
    """(size, mtime_ns, reason or None) for an image file; None when it cannot be opened (see _absent)."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            data = fh.read()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, image_problem(data)


def _absent(path: str) -> str:
    """The reason an image cannot be opened."""
    if not os.path.lexists(path):
        return "image not found"
    if os.path.islink(path) and not os.path.exists(path):
        return "image not found (broken symbolic link)"
    if os.path.isdir(path):
        return "a directory, not an image file"
    try:
        open(path, "rb").close()
    except OSError as e:
        return f"cannot read the image ({e.strerror or e})"
    return "cannot read the image"


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _check_chunk(paths: list[str]) -> list[tuple[int, int, str | None] | None]:
    return [check_image(p) for p in paths]


# ----------------------------------------------------------------------------------------- cache
def cache_dir() -> Path:
    """The project's cache directory (as pbn.groups picks it)."""
    return Path(os.environ.get("PBN_CACHE", Path.home() / ".cache" / "pbn-search"))


def _cache_file(data: str, root: Path) -> Path:
    key = hashlib.sha1(f"{data}\0{root.resolve()}".encode()).hexdigest()[:16]
    return cache_dir() / f"datacheck-{key}.json"


def _load_cache(path: Path) -> dict[str, list]:
    try:
        doc = json.loads(path.read_text())
        return doc["entries"] if doc.get("version") == CHECK_VERSION and isinstance(doc["entries"], dict) else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # absent or damaged: start afresh
        return {}


def _save_cache(path: Path, entries: dict[str, list]) -> None:
    """Atomically: a concurrent reader sees the old file or the new one (the last writer wins)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"version": CHECK_VERSION, "entries": entries}, separators=(",", ":")))
    except OSError as e:  # a read-only cache directory must not fail the check
        log.warning("data check cache not written (%s)", e)


# ------------------------------------------------------------------------------------ annotations
def _splits(data: str, root: Path, bad: list) -> dict[str, tuple[list[PoseRecord] | None, Path, str]]:
    """Both splits as load_source reads them (readers.split_records), every bad annotation file added to `bad`
    once: {split: (records or None if unreadable, the annotation file its size is blamed on, note)}."""
    out = {}
    for split in ("train", "valid"):
        problems: list[DataError] = []
        records = readers.split_records(data, root, split, problems)
        ann = readers.split_files(data, root, split)["annotations"]
        for e in problems:  # a file both splits read (LSP's joints.mat, a missing image directory) fails twice
            entry = (e.path, e.message) if e.path is not None else (str(ann), str(e))
            if entry not in bad:
                bad.append(entry)
        note = ""
        if data == "lsp" and split == "valid" and records == []:  # the one case the note is shown
            note = f" (LSP's test split, images 1001-2000 of {_people(ann)})"
        out[split] = (records, ann, note)
    return out


def _people(lsp_joints: Path) -> int:
    """People in LSP's joints.mat (0 if unreadable): named in the note of a too-short test split."""
    try:
        return len(readers.read_lsp_mat(lsp_joints))
    except DataError:
        return 0


# -------------------------------------------------------------------------------------- check_data
def check_data(cfg, jobs: int | None = None, use_cache: bool = True, executor: str = "thread") -> DataReport:
    """Check cfg's data (cfg.data, data_root, batch_size, train_limit, val_limit) as training will read it.
    jobs: parallel decoders (default: the usable CPUs); use_cache: read and write the verdict cache;
    executor: "thread" (default) or "process" (kept for benchmarks/data_check.py's comparison)."""
    start = time.perf_counter()
    if cfg.data == "synthetic":
        return DataReport("synthetic", "")
    root = Path(cfg.data_root)
    report = DataReport(cfg.data, str(root))
    if not root.is_dir():
        report.bad.append((str(root), "data root directory not found"))
        report.seconds = time.perf_counter() - start
        return report
    splits = _splits(cfg.data, root, report.bad)
    images: dict[str, None] = {}
    for split, (records, ann_path, note) in splits.items():
        if records is None:
            continue
        limit_name = "train_limit" if split == "train" else "val_limit"
        records = limit_records(records, getattr(cfg, limit_name))
        report.counts[split] = len(records)
        need = cfg.batch_size if split == "train" else 1
        if len(records) < need:
            limited = f" with {limit_name}={getattr(cfg, limit_name)}" if getattr(cfg, limit_name) else ""
            what = (f"fewer than one batch of {need} (the training loader drops the last partial batch)"
                    if split == "train" else "nothing to validate on")
            report.bad.append((str(ann_path), f"the {split} split holds {len(records)} people{limited}{note}: {what}"))
        images.update(dict.fromkeys(r.image for r in records))
    report.images = len(images)
    paths = _missing_directories(list(images), report.bad)
    verdicts, report.cached = _check_images(paths, cfg.data, root, jobs, use_cache, executor)
    report.bad += [(p, reason) for p, reason in verdicts.items() if reason]
    report.seconds = time.perf_counter() - start
    return report


def _missing_directories(paths: list[str], bad: list) -> list[str]:
    """One line per missing image directory instead of one per image in it; the other paths."""
    missing: dict[str, int] = {}
    parents: dict[str, bool] = {}
    keep = []
    for p in paths:
        d = os.path.dirname(p) or "."
        if d not in parents:
            parents[d] = os.path.isdir(d)
        if parents[d]:
            keep.append(p)
        else:
            missing[d] = missing.get(d, 0) + 1
    bad += [(d, f"image directory not found ({n} referenced image(s) in it)") for d, n in missing.items()]
    return keep


def _check_images(paths: list[str], data: str, root: Path, jobs: int | None, use_cache: bool,
                  executor: str = "thread") -> tuple[dict[str, str | None], int]:
    """{path: reason or None} in the order given, and how many came from the cache."""
    cache_path = _cache_file(data, root)
    cache = _load_cache(cache_path) if use_cache else {}
    verdicts: dict[str, str | None] = dict.fromkeys(paths)
    todo, hits = [], 0
    for p in paths:
        hit = cache.get(p)
        if hit is not None:
            try:
                st = os.stat(p)
            except OSError:
                st = None
            if st is not None and [st.st_size, st.st_mtime_ns] == hit[:2]:
                verdicts[p] = hit[2]
                hits += 1
                continue
        todo.append(p)
    if todo:
        jobs = max(1, jobs or usable_cpus())
        chunks = [todo[i:i + _CHUNK] for i in range(0, len(todo), _CHUNK)]
        pool_type = ProcessPoolExecutor if executor == "process" else ThreadPoolExecutor
        with pool_type(jobs) as pool:
            results = [r for rs in pool.map(_check_chunk, chunks) for r in rs]
        for p, r in zip(todo, results):
            if r is None:
                verdicts[p] = _absent(p)  # not cached: it has no (size, mtime) to key on
            else:
                verdicts[p] = r[2]
                cache[p] = [r[0], r[1], r[2]]
        if use_cache:
            _save_cache(cache_path, cache)
    return verdicts, hits


def require_valid_data(cfg) -> None:
    """check_data, raising DataError (first few bad files, the total, the command for the full list)."""
    report = check_data(cfg)
    if report.ok:
        return
    first = ", ".join(f"{p}: {reason}" for p, reason in report.bad[:FIRST_SHOWN])
    more = ", ..." if len(report.bad) > FIRST_SHOWN else ""
    command = f"python -m pbn.data.check --data {report.data} --data-root {report.root}"
    if cfg.batch_size != 16:
        command += f" --batch-size {cfg.batch_size}"
    for name in ("train_limit", "val_limit"):
        if getattr(cfg, name):
            command += f" --{name.replace('_', '-')} {getattr(cfg, name)}"
    raise DataError(f"{len(report.bad)} bad file(s) under {report.root} (first: {first}{more}); run "
                    f"`{command}` for the full list")


# --------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pbn.data.check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, choices=("mpii", "lsp"))
    p.add_argument("--data-root", required=True, help="the directory holding mpii/ or lsp/ (docs/data.md)")
    batch = PRESETS["paper"]["batch_size"]  # real data is trained with the paper preset
    p.add_argument("--batch-size", type=int, default=batch,
                   help=f"training batch size: train needs >= this many people (default: {batch}, the paper preset's)")
    p.add_argument("--train-limit", type=int, help="only the first N training people (as training's train_limit)")
    p.add_argument("--val-limit", type=int, help="only the first N validation people (val_limit)")
    p.add_argument("--jobs", type=int, help="parallel decoders (default: the usable CPUs)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the verdict cache")
    p.add_argument("--executor", choices=("thread", "process"), default="thread",
                   help="parallel decoding in threads (default, faster here) or processes")
    a = p.parse_args(argv)
    logging.basicConfig(format="%(levelname)s: %(message)s")  # the library's warnings (e.g. cache not written)
    for name in ("batch_size", "jobs", "train_limit", "val_limit"):
        if getattr(a, name) is not None and getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')}: expected >= 1, got {getattr(a, name)}")
    cfg = argparse.Namespace(data=a.data, data_root=a.data_root, batch_size=a.batch_size,
                             train_limit=a.train_limit, val_limit=a.val_limit)
    report = check_data(cfg, jobs=a.jobs, use_cache=not a.no_cache, executor=a.executor)
    for path, reason in report.bad:
        print(f"{path}: {reason}")
    print(report.summary())
    return 2 if report.bad else 0


if __name__ == "__main__":
    sys.exit(main())
