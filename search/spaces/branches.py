"""The branch study: which part grouping, how many data-driven clusters, how wide and deep the branches.

Read top to bottom; every constant says why (numbers measured on 2 CPU cores, one thread per trial, with the
small preset: 512 training and 768 validation images per epoch, ~17 s per epoch). On a GPU cluster:
`--preset paper --max-epochs 250 --data mpii --data-root ...` (README); nothing below is CPU-specific except
the budget, which the command line overrides.
"""

METRIC = "pckh"  # validation PCKh@0.5 Mean (hrnet convention), reported every epoch
NUM_SAMPLES = 8  # the 4 INITIAL strategies + 4 TPE proposals: the search stage is ~40% of a ~15-minute sweep
MAX_EPOCHS = 5  # PCKh ~20 after 5 epochs (chance ~1); the confirmation stage trains 12 trials this long
GRACE_PERIOD = 2  # the first rung: PCKh ~10 at epoch 2 (measured 10.0 for human W=64), well above chance ...
REDUCTION_FACTOR = 2  # ... the top half goes on to epoch 4, its top half to 5. How well the rungs predicted
AUDIT_FRACTION = 0.25  # epoch 5, the report measures on 2 of 8 search trials that run to the end regardless

# The confirmation race (search/verdict.py): each grouping's representative retrained with paired seeds, looks
# at 3, 5, 8 seeds, every point compared with `shared` (the paper's claim: branches beat a plain stacked
# hourglass head), family-wise error 0.05 over contrasts, metrics and looks.
CONFIRM_TOP = 0  # the per-strategy representatives already include the overall best
CONFIRM_MAX_SEEDS = 8  # the cap of a ~20-minute CPU sweep; the planner says what more seeds would decide
MARGIN = 3.0  # PCKh points: ~15% of the PCKh ~20 this 5-epoch CPU proxy reaches (docs/statistics.md)
LOOKS = (3, 5, 8)
SECONDS_PER_EPOCH = 15.0  # measured here: ~12 s of training and ~3 s of validation per epoch on one core

# Settings every trial shares (flat pbn.config keys). A searched name may not appear here, and what is fixed
# here stays fixed: `--preset paper` replaces the preset, so nothing CPU-specific is pinned below.
FIXED = {
    "preset": "small",  # CPU-sized: 64x64 input, 64-channel trunk, 2 stacks, batch 8, Adam 2e-3 (pbn/config.py)
}

# One trial of each strategy first, so every strategy is measured before TPE starts exploiting.
INITIAL = [
    {"grouping": "shared", "width": 64, "depth": 1},
    {"grouping": "per-part", "width": 16, "depth": 1},
    {"grouping": "human", "width": 64, "depth": 1},
    {"grouping": "mi", "clusters": 5, "width": 64, "depth": 1},
]


def space(trial):
    """Define-by-run: the cluster count exists only for the data-driven grouping."""
    grouping = trial.suggest_categorical("grouping", ["shared", "per-part", "human", "mi"])
    if grouping == "mi":
        trial.suggest_int("clusters", 2, 8)  # the paper studies k around 5-6; 8 is near per-part
    if grouping == "per-part":
        # 16 branches make the bank 16 x W channels wide: W=128 D=3 measured 160 s/epoch on one core, 17x
        # the trunk's cost, more than a 15-minute CPU sweep can afford. On a GPU cluster, widen this.
        trial.suggest_int("width", 8, 32, step=8)
    else:
        # W: the paper's example is 64 (the trunk here is 64). Above 96 an epoch costs ~1.7x that of W=64 on
        # one core; widen on a GPU cluster.
        trial.suggest_int("width", 16, 96, step=16)
    trial.suggest_int("depth", 0, 2)  # D: residual blocks per branch; 0 = 1x1 convs only
    return None
