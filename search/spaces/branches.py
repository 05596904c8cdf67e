"""The branch study: which part grouping, how many data-driven clusters, how wide and deep the branches.

Read top to bottom; every constant says why. `python search/run.py --space search/spaces/branches.py`.
"""

METRIC = "pckh"  # validation PCKh@0.5 mean (hrnet convention), reported every epoch
MODE = "max"
NUM_SAMPLES = 10  # default budget: 4 seeded strategies + 6 Optuna proposals fit ~10 min on 2 cores
MAX_EPOCHS = 8  # the small preset climbs to ~25% PCKh in 8 epochs; rankings settle after ~4
GRACE_PERIOD = 2  # epoch 1 scores are all near chance: judge no trial before epoch 2 ...
REDUCTION_FACTOR = 2  # ... then keep the top half at each rung (epochs 2, 4, 8)

# Settings every trial shares (flat pbn.config keys); --preset/--data on the command line override.
FIXED = {
    "preset": "small",  # CPU-sized model; use --preset paper on a GPU cluster
    "stacks": 2,  # the paper's ablations use 3; 2 keeps intermediate supervision at 2/3 of the cost
    "synthetic_train": 768,  # per-epoch images: one epoch of one trial is ~15 s on one core
    "synthetic_val": 192,
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
        # the trunk's cost, more than a 10-minute CPU sweep can afford. On a GPU cluster, widen this.
        trial.suggest_int("width", 8, 32, step=8)
    else:
        trial.suggest_int("width", 16, 128, step=16)  # W: the paper's example is 64 (the trunk here is 64)
    trial.suggest_int("depth", 0, 3)  # D: residual blocks per branch; 0 = 1x1 convs only
    return None
