"""Named dataset facts: joint order, flip pairs, reporting groups, visibility codes. Data, no logic.

All joint coordinates inside the project are 0-based pixels of the original image; the 1-based MATLAB
convention of published files is converted at the file boundary (readers, evaluate CLI).
"""

from __future__ import annotations

# Per-joint annotation flag, the third column of every joints[K, 3] array in the project.
MISSING = 0  # not annotated: neither trained on nor scored
OCCLUDED = 1  # annotated, MPII is_visible = 0: trained on and scored, counted in the occluded subset
VISIBLE = 2  # annotated and visible
ANNOTATED = 3  # annotated, visibility unknown (e.g. HRNet JSON only): occlusion metrics are NaN

# MPII, 0-based order shared by every reference codebase.
MPII_JOINTS = (
    "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
    "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist",
)
NUM_JOINTS = len(MPII_JOINTS)
J = {name: i for i, name in enumerate(MPII_JOINTS)}

MPII_FLIP_PAIRS = ((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13))

# Skeleton edges (child, parent) used for drawing and the synthetic kinematic model.
MPII_EDGES = (
    (0, 1), (1, 2), (2, 6), (3, 6), (4, 3), (5, 4), (7, 6), (8, 7), (9, 8),
    (10, 11), (11, 12), (12, 7), (13, 7), (14, 13), (15, 14),
)

# PCKh reporting groups (HRNet/bearpaw): Head is head top only; the rest average left and right.
MPII_REPORT_GROUPS = {
    "head": (J["head_top"],),
    "shoulder": (J["r_shoulder"], J["l_shoulder"]),
    "elbow": (J["r_elbow"], J["l_elbow"]),
    "wrist": (J["r_wrist"], J["l_wrist"]),
    "hip": (J["r_hip"], J["l_hip"]),
    "knee": (J["r_knee"], J["l_knee"]),
    "ankle": (J["r_ankle"], J["l_ankle"]),
}
# The MPII "Mean" leaves out pelvis and thorax (upper neck and head top stay in).
MPII_MEAN_EXCLUDED = (J["pelvis"], J["thorax"])
# PCKh normalizer: this fraction of the head-box diagonal.
PCKH_SC_BIAS = 0.6

# LSP, 0-based order of joints.mat.
LSP_JOINTS = (
    "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "r_wrist", "r_elbow",
    "r_shoulder", "l_shoulder", "l_elbow", "l_wrist", "neck", "head_top",
)
LSP_FLIP_PAIRS = ((0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9))
LSP_REPORT_GROUPS = {
    "head": (12, 13),  # neck and head top averaged (eval_pose)
    "shoulder": (8, 9),
    "elbow": (7, 10),
    "wrist": (6, 11),
    "hip": (2, 3),
    "knee": (1, 4),
    "ankle": (0, 5),
}
LSP_TORSO = (9, 2)  # PCK@0.2 reference distance: l-shoulder to r-hip
# Where each LSP joint sits in the MPII order (the model always predicts the 16 MPII joints;
# LSP's neck is MPII's upper neck; pelvis and thorax are missing in LSP records).
LSP_TO_MPII = (0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15, 8, 9)

# The paper's hand-crafted grouping (section 3.1), in MPII indices.
HUMAN_GROUPS = (
    (J["head_top"], J["upper_neck"], J["thorax"]),
    (J["l_wrist"], J["l_elbow"], J["l_shoulder"]),
    (J["r_wrist"], J["r_elbow"], J["r_shoulder"]),
    (J["l_knee"], J["l_ankle"]),
    (J["r_knee"], J["r_ankle"]),
    (J["l_hip"], J["r_hip"], J["pelvis"]),
)
