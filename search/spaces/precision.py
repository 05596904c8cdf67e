"""Is bf16 training equivalent to fp32 for the question this project asks? The project's own verdict decides.

`python search/run.py --space search/spaces/precision.py`: one configuration of the default study (the paper's
human grouping, W=64, D=1, the small preset, 5 epochs) trained in fp32 and in bf16 autocast with paired seeds,
raced until the difference is decided, bf16 against fp32. `precision = "auto"` trains in bf16 on CPUs that
compute it natively only if this study finds the two `equivalent` within MARGIN (docs/development.md,
"Precision").
"""

METRIC = "pckh"  # validation PCKh@0.5 Mean, the default study's metric
MAX_EPOCHS = 5  # the default study's budget (search/spaces/branches.py)

FIXED = {
    "preset": "small",
    "grouping": "human",  # the paper's hand-crafted groups, at the default study's W and D
    "width": 64,
    "depth": 1,
}

GRID = [{"precision": "fp32"}, {"precision": "bf16"}]  # each trained once in the search stage, then raced

CONFIRM_TOP = 2  # both points (they share one grouping, which alone would race only its best)
CONFIRM_MAX_SEEDS = 20
LOOKS = (3, 5, 8, 12, 16, 20)
FAMILY = "vs-reference"
REFERENCE = {"precision": "fp32"}  # bf16 against fp32
# A precision must not move the verdict of a study whose margin is 3 PCKh points (search/spaces/branches.py):
# 1 point, about the validation set's own half-width at 768 images, is a third of that.
MARGIN = 1.0
SECONDS_PER_EPOCH = 7.0  # measured: ~6.5 s per epoch on one core at the small preset (benchmarks/seed_variance.py)
