"""The branch study: which part grouping, how many data-driven clusters, how wide and deep the branches.

Read top to bottom; every constant says why (numbers measured on 2 CPU cores, one thread per trial, with the
small preset: 512 training and 768 validation images per epoch, ~7.5 s per epoch in fp32). The paper-scale
version for a GPU cluster is search/spaces/gpu.py.
"""

METRIC = "pckh"  # validation PCKh@0.5 Mean (hrnet convention), reported every epoch
NUM_SAMPLES = 8  # the 4 INITIAL strategies + 4 TPE proposals
MAX_EPOCHS = 5  # PCKh ~23-26 after 5 epochs (chance ~1), where the seeds of one point scatter by sd ~0.7-1.3
GRACE_PERIOD = 2  # the first rung at epoch 2, well above chance ...
REDUCTION_FACTOR = 2  # ... the top half goes on to epoch 4, its top half to 5. How well the rungs predicted
AUDIT_FRACTION = 0.25  # epoch 5, the report measures on the 2 of 8 search trials that run to the end regardless
SECONDS_PER_EPOCH = 7.5  # measured here: one core, fp32, small preset (benchmarks/seed_variance.py)

# The confirmation race (search/verdict.py, docs/statistics.md): each grouping's representative retrained with
# paired seeds, every point against `shared` (the paper's claim: branches beat a plain stacked hourglass head),
# family-wise error 0.05 over contrasts, metrics (PCKh 0.04, occluded PCKh 0.01) and looks.
CONFIRM_TOP = 0  # the four representatives already include the overall best
MARGIN = 3.0  # PCKh points: ~12% of the PCKh ~25 this 5-epoch CPU proxy reaches; smaller differences do not matter
LOOKS = (3, 5, 8, 12)  # seed counts the race decides at ...
CONFIRM_MAX_SEEDS = 12  # ... up to 12: at most 4 x 12 x 5 = 240 epochs, a ~20-minute sweep on 2 cores. The
# measured paired sd of ~0.9-2.8 PCKh (benchmarks/seed_variance.py) decides a 3-point difference by 5-8 seeds

# Settings every trial shares (flat pbn.config keys). A searched name may not appear here.
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
        # 16 branches make the bank 16 x W channels wide: beyond W=32 an epoch costs several times the trunk's
        # on one core, more than a 20-minute CPU sweep can afford. On a GPU cluster: search/spaces/gpu.py.
        trial.suggest_int("width", 8, 32, step=8)
    else:
        # W: the paper's example is 64 (the trunk here is 64). Above 96 an epoch costs ~1.7x that of W=64.
        trial.suggest_int("width", 16, 96, step=16)
    trial.suggest_int("depth", 0, 2)  # D: residual blocks per branch; 0 = 1x1 convs only
    return None
