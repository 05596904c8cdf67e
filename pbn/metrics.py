"""Every per-epoch metric of a run, declared once: key, dtype, meaning, and whether it can be optimised.

`pbn.train.fit` reports these keys each epoch; the sweep's Parquet schema, the space file's METRIC
check and the column table of docs/results.md are all derived from this list (search/results.py). A data
source's `score` returns the validation keys (those with `origin="score"`).
"""

from __future__ import annotations

from dataclasses import dataclass

from pbn.skeleton import MPII_REPORT_GROUPS


@dataclass(frozen=True)
class Metric:
    key: str
    dtype: str  # pandas dtype of its Parquet column
    meaning: str
    mode: str | None = None  # "max"/"min" for a metric a search may optimise; None: not an objective
    origin: str = "fit"  # "score": the data source's scoring; "fit": the training loop; "trial": the sweep


CI = "95% bootstrap interval over validation images (1000 resamples, seed 0)"

METRICS: tuple[Metric, ...] = (
    Metric("pckh", "float64", "val PCKh@0.5 Mean (hrnet convention: count-weighted over the 14 joints without "
           "pelvis and thorax, hit at <=); LSP: PCK@0.2", "max", "score"),
    Metric("pckh_lo", "float64", f"lower end of the {CI} of pckh", None, "score"),
    Metric("pckh_hi", "float64", f"upper end of the {CI} of pckh", None, "score"),
    Metric("pckh_visible", "float64", "the Mean restricted to visible annotated joints (NaN without visibility "
           "flags)", "max", "score"),
    Metric("pckh_occluded", "float64", "the Mean restricted to occluded annotated joints (NaN without visibility "
           "flags)", "max", "score"),
    Metric("pckh_occluded_lo", "float64", f"lower end of the {CI} of pckh_occluded", None, "score"),
    Metric("pckh_occluded_hi", "float64", f"upper end of the {CI} of pckh_occluded", None, "score"),
    *(Metric(f"pckh_{g}", "float64", f"PCKh@0.5 of the {g} joints" + (" (head top)" if g == "head" else
             " (left and right averaged)"), "max", "score") for g in MPII_REPORT_GROUPS),
    Metric("pckh_0_1", "float64", "the Mean at alpha = 0.10 exactly", "max", "score"),
    Metric("pckh_auc", "float64", "the Mean averaged over alpha = 0, 0.01, ..., 0.5", "max", "score"),
    Metric("train_loss", "float64", "joint-weighted heatmap MSE summed over stacks, training", "min"),
    Metric("val_loss", "float64", "the same on the validation images", "min"),
    Metric("lr", "float64", "learning rate of the epoch"),
    Metric("images_per_second", "float64", "training images per second of the epoch"),
    Metric("epoch_seconds", "float64", "wall time of the epoch: training + validation"),
    Metric("train_seconds", "float64", "wall time of the epoch's training"),
    Metric("val_seconds", "float64", "wall time of the epoch's validation (flip test, scoring, intervals)"),
    Metric("setup_seconds", "float64", "time before the first epoch: data, groups, model, checkpoint load"),
    Metric("params", "int64", "trainable parameters of the model"),
    Metric("gflops", "float64", "forward pass per image in GFLOPs, counted as 2 x multiply-adds "
           "(torch FlopCounterMode: convolutions and matmuls; BN, ReLU, pooling not counted)"),
    Metric("precision", "string", "what the run computed in: bf16 (autocast) or fp32, resolved from the config's "
           "precision on the trial's device (auto: bf16 where native, pbn/device.py)"),
    Metric("device_seconds", "float64", "epoch_seconds x the GPUs the trial holds (x its CPUs on a CPU-only "
           "trial)", None, "trial"),
)
SCORE_KEYS = tuple(m.key for m in METRICS if m.origin == "score")
OBJECTIVES = {m.key: m.mode for m in METRICS if m.mode}
