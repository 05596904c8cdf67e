"""The paper's grouping ablation as a grid: every strategy at one fixed branch W and D, 3 stacks.

Every point of GRID is trained once in the search stage, in order, to MAX_EPOCHS (no early stopping:
the file sets no GRACE_PERIOD); then the representative of each strategy is raced with up to CONFIRM_MAX_SEEDS
paired seeds, and the report compares them with intervals.
`python search/run.py --space search/spaces/ablation.py` (on a GPU cluster: add --preset paper
--max-epochs 250 --data mpii --data-root ...).
"""

METRIC = "pckh"  # validation PCKh@0.5 Mean (hrnet convention)
MAX_EPOCHS = 5  # small preset on CPU, as the branch study; a paper-scale run passes --max-epochs 250

FIXED = {
    "preset": "small",  # CPU-sized trunk; --preset paper on a GPU cluster
    "stacks": 3,  # the paper's ablations use 3-stack PBNs (section 3.3)
    "width": 64,  # W: the paper's example branch width ...
    "depth": 1,  # ... and depth D, the same for every strategy so only the grouping differs
}

# shared (one head = plain stacked hourglass), per-part (16 branches), human (the paper's 6 groups), and the
# data-driven mutual-information grouping at every k the paper discusses around its k = 5, 6 findings.
GRID = [
    {"grouping": "shared"},
    {"grouping": "per-part"},
    {"grouping": "human"},
    *({"grouping": "mi", "clusters": k} for k in range(4, 9)),
]

CONFIRM_TOP = 0  # no overall top-k beyond each strategy's representative (its best k for mi) ...
CONFIRM_MAX_SEEDS = 8  # ... raced with up to 8 paired seeds against `shared` (the plain stacked hourglass)
MARGIN = 3.0  # PCKh points that matter on a 5-epoch CPU proxy (~15% of its PCKh ~20); on MPII use ~0.5 (--margin)
