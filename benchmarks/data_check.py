"""Time `python -m pbn.data.check` at MPII's scale: `python benchmarks/data_check.py [--files 25000]`.

Builds a fake data root in a temporary directory: <root>/mpii/images/ holds --files symlinks to the 5 real
sample images (shared/data/samples/mpii), annotations/train.json and valid.json (HRNet format) one person per
image, repeating the sample people. Then runs the command twice with an empty verdict cache (PBN_CACHE in the
temporary directory): the first run decodes every image, the second only stats them. The times are wall
times of the whole command (interpreter start, annotation parsing and the check).

A second, smaller root (--compare-files) compares thread and process pools and the number of jobs.
Note: 5 distinct files stay in the page cache, so this measures decoding, not disk reads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "data" / "samples" / "mpii"
sys.path.insert(0, str(ROOT))

from pbn.data.check import usable_cpus  # noqa: E402


def build_root(where: Path, files: int, valid: int) -> Path:
    people = json.loads((SAMPLES / "test_mpii.json").read_text())
    by_name = {p["image"]: p for p in people}
    jpegs = sorted(SAMPLES.glob("*.jpg"))
    images = where / "mpii" / "images"
    images.mkdir(parents=True)
    (where / "mpii" / "annotations").mkdir()
    entries = []
    for i in range(files):
        src = jpegs[i % len(jpegs)]
        name = f"{i:09d}.jpg"
        os.symlink(src, images / name)
        entries.append({**by_name[src.name], "image": name})
    (where / "mpii" / "annotations" / "train.json").write_text(json.dumps(entries[valid:]))
    (where / "mpii" / "annotations" / "valid.json").write_text(json.dumps(entries[:valid]))
    return where


def run(root: Path, cache: Path, jobs: int, executor: str) -> float:
    cmd = [sys.executable, "-m", "pbn.data.check", "--data", "mpii", "--data-root", str(root), "--jobs", str(jobs),
           "--executor", executor]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PBN_CACHE": str(cache)})
    seconds = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"check failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return seconds


def measure(root: Path, files: int, jobs: int, executor: str, tmp: Path) -> tuple:
    cache = tmp / f"cache-{files}-{executor}-{jobs}"
    first = run(root, cache, jobs, executor)
    second = run(root, cache, jobs, executor)
    return files, executor, jobs, first, second, files / first


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=25000, help="images in the full-size root")
    p.add_argument("--valid", type=int, default=3000, help="of which in valid.json")
    p.add_argument("--compare-files", type=int, default=2000, help="images in the thread/process comparison (0: skip)")
    a = p.parse_args()
    cpus = usable_cpus()
    rows = []
    with tempfile.TemporaryDirectory(prefix="pbn-datacheck-") as tmp:
        tmp = Path(tmp)
        if a.compare_files:
            small = build_root(tmp / "small", a.compare_files, min(a.valid, a.compare_files // 10))
            for executor, jobs in [("thread", 1), ("thread", cpus), ("process", cpus)]:
                rows.append(measure(small, a.compare_files, jobs, executor, tmp))
        big = build_root(tmp / "big", a.files, a.valid)
        rows.append(measure(big, a.files, cpus, "thread", tmp))
    print(f"pbn.data.check on symlinks to the 5 sample images ({cpus} usable CPUs, {os.cpu_count()} in the machine)")
    print(f"{'files':>7} {'executor':>8} {'jobs':>4} {'first run s':>11} {'second run s':>12} {'files/s':>8}")
    for files, executor, jobs, first, second, rate in rows:
        print(f"{files:>7} {executor:>8} {jobs:>4} {first:>11.2f} {second:>12.2f} {rate:>8.0f}")


if __name__ == "__main__":
    main()
