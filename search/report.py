"""Figures and a markdown summary of a sweep: `python -m search.report results/<name>.parquet [--out DIR]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from search.results import final_rows, read_results

COLORS = {"shared": "tab:gray", "per-part": "tab:orange", "human": "tab:blue", "mi": "tab:green"}


def write_report(parquet: str | Path, out: str | Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parquet = Path(parquet)
    if not parquet.is_file():
        raise FileNotFoundError(f"{parquet}: results file not found")
    df = read_results(parquet)  # may run while the sweep is still writing
    out = Path(out) if out else parquet.with_suffix("")
    out.mkdir(parents=True, exist_ok=True)
    last = final_rows(df)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for _, g in df.sort_values("epoch").groupby("trial_id"):
        ax.plot(g["epoch"], g["pckh"], color=COLORS.get(g["grouping"].iloc[0], "k"), alpha=0.8, marker=".")
    for name, c in COLORS.items():
        ax.plot([], [], color=c, label=name)
    ax.set(xlabel="epoch", ylabel="val PCKh@0.5", title="learning curves by grouping strategy")
    ax.legend()
    fig.savefig(out / "learning_curves.png", dpi=110, bbox_inches="tight")
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, col in zip(axes, ("width", "depth")):
        for name, g in last.groupby("grouping"):
            ax.scatter(g[col], g["pckh"], color=COLORS.get(name, "k"), label=name, s=40)
        ax.set(xlabel=col.upper()[0] + f" ({col})", title=f"final PCKh vs {col}")
        ax.set_xscale("log", base=2) if col == "width" else None
    axes[0].set_ylabel("final val PCKh@0.5")
    axes[1].legend()
    fig.savefig(out / "pckh_vs_width_depth.png", dpi=110, bbox_inches="tight")
    plt.close(fig)

    per = last.groupby("grouping")[["pckh_visible", "pckh_occluded"]].mean()
    ax = per.plot.bar(figsize=(6, 4), color=["tab:cyan", "tab:red"], rot=0)
    ax.set(ylabel="PCKh@0.5 (mean over trials' last epoch)", title="visible vs occluded joints")
    ax.figure.savefig(out / "visible_vs_occluded.png", dpi=110, bbox_inches="tight")
    plt.close(ax.figure)

    cols = ["grouping", "clusters", "width", "depth", "epoch", "stopped_early", "pckh", "pckh_visible",
            "pckh_occluded"]
    lines = [f"# Sweep {df['sweep'].iloc[0]}", "",
             f"{last.shape[0]} trials, {len(df)} (trial, epoch) rows; {int(last['stopped_early'].sum())} stopped "
             "early by ASHA. PCKh@0.5, hrnet convention, last reported epoch of each trial.", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in last.iterrows():
        cells = ("" if pd.isna(r[c]) else (f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c])) for c in cols)
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## By strategy (mean of trials' last epoch)", "", per.round(2).to_markdown()
              if hasattr(per, "to_markdown") and _has_tabulate() else per.round(2).to_string(), "",
              "Figures: learning_curves.png, pckh_vs_width_depth.png, visible_vs_occluded.png"]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return out


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m search.report", description=__doc__)
    p.add_argument("parquet")
    p.add_argument("--out", help="output directory (default: results/<name>/)")
    a = p.parse_args(argv)
    try:
        out = write_report(a.parquet, a.out)
    except (FileNotFoundError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}/summary.md and 3 figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
