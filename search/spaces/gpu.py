"""The branch study at the paper's scale, for a GPU cluster: real MPII, the 8-stack 256-channel trunk, 250 epochs.

`ray up cluster/gpu.yaml`, then on the head (docs/cluster.md):
  python search/run.py --space search/spaces/gpu.py --data mpii --data-root /data --gpus-per-trial 1 \
      --cpus-per-trial 8
Every trial trains the paper's recipe (pbn/config.py PRESETS["paper"]: RMSProp 2.5e-4, steps at 170 and 220,
batch 16, flip test); what varies is the grouping, the cluster count of mi, and the branches' W and D. Read
`python -m search.plan` (docs/statistics.md) before raising CONFIRM_MAX_SEEDS: each confirmation trial is a full
250-epoch run.
"""

METRIC = "pckh"  # MPII validation PCKh@0.5 Mean (hrnet convention)
MAX_EPOCHS = 250  # the paper's schedule (section 4.1)
NUM_SAMPLES = 24  # 4 pinned strategies + 20 TPE proposals over grouping x k x W x D
GRACE_PERIOD = 25  # the first judgement after 10% of the schedule: rankings at epoch 25 already track the
REDUCTION_FACTOR = 3  # final ones far better than at epoch 2-5 (check the report's audit); rungs 25, 75, 225
AUDIT_FRACTION = 0.15  # ~4 of 24 trials run to the end regardless, to audit those rungs
# One epoch on one A10G (cluster/gpu.yaml's g5.2xlarge) in bf16, an ESTIMATE, not a measurement: ~91 GFLOPs forward
# per image (`python -m pbn.model --preset paper --grouping human --width 128`), x3 for training over 22,246 images
# plus the flip test over 2,958: 6.6 PFLOP, at ~30% of the card's 125 TFLOPS bf16 peak. The driver prints the
# sweep's cost with it until epochs are measured (a resume uses the measured median).
SECONDS_PER_EPOCH = 180.0

# The confirmation race: each grouping's representative against shared (the plain stacked hourglass head), paired
# seeds at looks 3, 5, 8. On MPII the field's differences are 0.4-1.8 PCKh (PBN 92.7, hourglass 90.9 on the test
# set), and a run's validation interval is about +-0.5: a margin of 0.5 PCKh is the smallest difference that
# matters and that the validation set can resolve.
CONFIRM_TOP = 0
CONFIRM_MAX_SEEDS = 8
MARGIN = 0.5
LOOKS = (3, 5, 8)

FIXED = {
    "preset": "paper",  # 256x256 input, 256-channel 8-stack trunk, 250 epochs of RMSProp (section 4.1)
    "workers": 6,  # DataLoader processes per trial: JPEG decode and augmentation keep one GPU busy (8 vCPU)
}

INITIAL = [
    {"grouping": "shared", "width": 256, "depth": 1},  # the plain stacked hourglass head, as wide as the trunk
    {"grouping": "per-part", "width": 32, "depth": 1},
    {"grouping": "human", "width": 128, "depth": 1},
    {"grouping": "mi", "clusters": 5, "width": 128, "depth": 1},  # the paper's data-driven k
]


def space(trial):
    """Define-by-run: the cluster count exists only for the data-driven grouping; widths scale with the number of
    branches so that every grouping's branch bank stays within ~2x the trunk's width."""
    grouping = trial.suggest_categorical("grouping", ["shared", "per-part", "human", "mi"])
    if grouping == "mi":
        trial.suggest_int("clusters", 4, 8)  # the paper's k = 5-6 and its neighbours
    if grouping == "per-part":
        trial.suggest_int("width", 16, 64, step=16)  # 16 branches x 64 = 1,024 channels at the widest
    elif grouping == "shared":
        trial.suggest_int("width", 128, 512, step=128)  # one branch: as wide as the trunk or wider
    else:
        trial.suggest_int("width", 64, 256, step=64)  # 5-8 branches
    trial.suggest_int("depth", 0, 3)  # D: residual blocks per branch
