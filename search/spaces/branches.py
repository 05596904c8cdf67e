"""The branch study: which part grouping, how many data-driven clusters, how wide and deep the branches.

Read top to bottom; every constant says why (numbers measured on 2 CPU cores, one thread per trial).
`python search/run.py --space search/spaces/branches.py`; on a GPU cluster add `--preset paper
--max-epochs 250 --data mpii --data-root ...` (README).
"""

METRIC = "pckh"  # validation PCKh@0.5 Mean (hrnet convention), reported every epoch
NUM_SAMPLES = 8  # the 4 INITIAL strategies + 4 TPE proposals: the search stage is ~40% of a ~15-minute sweep
MAX_EPOCHS = 6  # 6 x 512 images: PCKh ~20 (chance ~1); every epoch costs ~16 s of one core
GRACE_PERIOD = 3  # the first rung: at epoch 3 PCKh is ~8-12, not the near-chance 2-5 of epochs 1-2 ...
REDUCTION_FACTOR = 2  # ... and the top half goes on to epoch 6. How well epoch 3 predicts epoch 6: the report
AUDIT_FRACTION = 0.25  # 2 of 8 search trials run to the end whatever ASHA says, to measure exactly that

# The confirmation stage: the best point of each grouping strategy (4) retrained with 3 paired seeds. Seed
# noise is 2-4 PCKh points here, far above the validation set's interval: a single run ranks nothing.
# 3 seeds are the fewest that give a t interval (t = 4.3); more seeds narrow it as 1/sqrt(n) (--confirm-seeds).
CONFIRM_TOP = 0  # the per-strategy best already include the overall best
CONFIRM_SEEDS = 3

# Settings every trial shares (flat pbn.config keys). A searched name may not appear here.
FIXED = {
    "preset": "small",  # CPU-sized model (64x64 input, 64-channel trunk, 2 stacks); --preset paper on GPUs
    "synthetic_train": 512,  # training images per epoch: 19 ms each on one core (fwd + bwd)
    # 1152 validation images give a bootstrap half-width of ~1.0 PCKh point at PCKh 25 (768 gave 1.2);
    # synthetic images cost nothing to make, but validating one costs 6 ms (no flip) or 10.5 ms (flip test).
    "synthetic_val": 1152,
    # The flip test adds ~1 PCKh to every configuration alike and would make validation 60% of an epoch
    # here; the comparison between designs is the point of this study. The paper protocol: --set flip_test=true
    "flip_test": False,
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
