"""How much a configuration's result moves with the training seed, and what the paired race then costs:
`python benchmarks/seed_variance.py [--seeds 4] [--epochs 5] [--variants NAME ...] [--json]` (NAME: a key of VARIANTS).

Trains every (variant, grouping, seed) of the default study's budget with `pbn.train.fit` (one thread per run,
two runs at a time on 2 cores) and prints, per variant: the final PCKh per grouping (mean, sd over seeds), the sd
of the paired difference between the groupings (seed i of one against seed i of the other), the correlation
rho of the two at the same seed, and the mean epoch time. These are the `--sd` and `--rho` of
`python -m search.plan`: a variant with a smaller paired sd decides the race in fewer seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

VARIANTS = {  # the small preset as it was, and the candidates for variance reduction and cheaper trials
    "batch8-constant": {"batch_size": 8, "lr": 2e-3, "lr_schedule": "step"},
    "batch8-cosine": {"batch_size": 8, "lr": 2e-3, "lr_schedule": "cosine"},
    "batch16-cosine-3e-3": {"batch_size": 16, "lr": 3e-3, "lr_schedule": "cosine"},
    "batch16-cosine-4e-3": {"batch_size": 16, "lr": 4e-3, "lr_schedule": "cosine"},
}
GROUPINGS = {"shared": {"grouping": "shared", "width": 64, "depth": 1},
             "human": {"grouping": "human", "width": 64, "depth": 1}}


def one(job: tuple[str, dict, str, dict, int, int]) -> dict:
    variant, over, grouping, point, seed, epochs = job
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from pbn.config import resolve
    from pbn.train import fit

    cfg = resolve({**over, **point, "seed": seed, "epochs": epochs, "threads": 1})
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        history = fit(cfg, out, tensorboard=False, progress=False)
    last = history[-1]
    return {"variant": variant, "grouping": grouping, "seed": seed, "pckh": last["pckh"],
            "pckh_occluded": last["pckh_occluded"], "wall": time.perf_counter() - t0,
            "precision": last.get("precision"), "epoch_seconds": float(np.mean([h["epoch_seconds"] for h in history]))}


def summarize(rows: list[dict]) -> list[dict]:
    out = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        v = [r for r in rows if r["variant"] == variant]
        by = {g: {r["seed"]: r["pckh"] for r in v if r["grouping"] == g} for g in GROUPINGS}
        seeds = sorted(set.intersection(*(set(s) for s in by.values())))
        a, b = (np.array([by[g][s] for s in seeds]) for g in GROUPINGS)
        out.append({"variant": variant, **{f"{g}_mean": float(np.mean(x)) for g, x in zip(GROUPINGS, (a, b))},
                    **{f"{g}_sd": float(np.std(x, ddof=1)) for g, x in zip(GROUPINGS, (a, b))},
                    "paired_sd": float(np.std(b - a, ddof=1)), "rho": float(np.corrcoef(a, b)[0, 1]),
                    "epoch_seconds": float(np.mean([r["epoch_seconds"] for r in v])), "seeds": len(seeds)})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/seed_variance.py", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=4, help="paired seeds per variant and grouping (default: 4)")
    p.add_argument("--epochs", type=int, default=5, help="epochs per run (default: 5, the default study's)")
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), help=f"of {list(VARIANTS)} (default: all)")
    p.add_argument("--json", action="store_true", help="one JSON object per variant")
    a = p.parse_args(argv)
    jobs = [(v, VARIANTS[v], g, point, 1000 + s, a.epochs) for s in range(a.seeds) for v in a.variants
            for g, point in GROUPINGS.items()]
    with ProcessPoolExecutor(max_workers=2) as pool:
        rows = list(pool.map(one, jobs))
    for r in summarize(rows):
        if a.json:
            print(json.dumps(r))
        else:
            print(f"{r['variant']:>22}: shared {r['shared_mean']:5.1f} (sd {r['shared_sd']:.2f}), human "
                  f"{r['human_mean']:5.1f} (sd {r['human_sd']:.2f}), paired sd {r['paired_sd']:.2f}, rho "
                  f"{r['rho']:+.2f}, {r['epoch_seconds']:.1f} s/epoch ({r['seeds']} seeds)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
