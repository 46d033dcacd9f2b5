"""Turn run folders (each with a metrics.json) into the paper's table (Markdown + CSV) and a Pareto plot.

    python -m hsd_lightning.evaluation.report runs/sweep [more folders] --out runs/sweep/report
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

from .metrics import format_table

FAMILY_ORDER = {"vanilla": 0, "calm": 1, "skipdecode": 2, "hsd": 3}
MARKERS = {"vanilla": "*", "calm": "s", "skipdecode": "^", "hsd": "o"}


def load_runs(folders: list[str]) -> list[dict]:
    runs = []
    for folder in folders:
        found = sorted(Path(folder).rglob("metrics.json"))
        if not found:
            print(f"warning: {folder} holds no metrics.json (run predict or the sweep there first); skipped",
                  file=sys.stderr)
        for path in found:
            try:
                m = json.loads(path.read_text())
            except json.JSONDecodeError:
                print(f"warning: {path} is not valid JSON; skipped", file=sys.stderr)
                continue
            m["run"] = str(path.parent)
            runs.append(m)
    return runs


def build_rows(runs: list[dict]) -> dict[str, list[dict]]:
    """Rows grouped by (dataset, model), sorted like the paper, with speed-up vs that group's vanilla run."""
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(f"{r.get('dataset')} / {r.get('model')}", []).append(r)
    for rows in groups.values():
        rows.sort(key=lambda r: (FAMILY_ORDER.get(r.get("decoder_name"), 9), -r.get("avg_layer", 0)))
        base = next((r for r in rows if r.get("decoder_name") == "vanilla"), None)
        for r in rows:
            if base and base.get("tokens_per_second"):
                r["speedup"] = r["tokens_per_second"] / base["tokens_per_second"]
    return groups


def plot(groups: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(groups), 2, figsize=(11, 4.2 * len(groups)), squeeze=False)
    for row_axes, (title, rows) in zip(axes, groups.items()):
        for ax, key, label in ((row_axes[0], "rougeL", "ROUGE-L"), (row_axes[1], "bertscore", "BERTScore F1")):
            for fam, marker in MARKERS.items():
                pts = [(r["avg_layer"], r[key], r["decoder"]) for r in rows
                       if r.get("decoder_name") == fam and not math.isnan(r.get(key, math.nan))]
                if not pts:
                    continue
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, s=70, label=fam)
                for x, y, name in pts:
                    ax.annotate(name.split("(")[-1].rstrip(")"), (x, y), fontsize=7, xytext=(3, 3),
                                textcoords="offset points")
            ax.set_xlabel("Avg. Layer (layers per generated token)")
            ax.set_ylabel(label)
            ax.set_title(f"{title}: {label} vs. depth")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+")
    p.add_argument("--out", default=None, help="output folder (default: <first folder>/report)")
    args = p.parse_args(argv)
    runs = load_runs(args.folders)
    if not runs:
        raise SystemExit(f"no metrics.json under {args.folders}: nothing to report")
    groups = build_rows(runs)
    out = Path(args.out or Path(args.folders[0]) / "report")
    out.mkdir(parents=True, exist_ok=True)
    md = []
    cols = ["dataset", "model", "decoder", "avg_layer", "rouge1", "rouge2", "rougeL", "bleu1", "bleu4", "bertscore",
            "tokens_per_second", "speedup", "examples", "empty_predictions", "run"]
    with (out / "report.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for title, rows in groups.items():
            md.append(f"### {title}\n\n{format_table(rows)}\n")
            w.writerows(rows)
    (out / "report.md").write_text("\n".join(md))
    plot(groups, out / "pareto.png")
    print("\n".join(md))
    print(f"wrote {out / 'report.md'}, {out / 'report.csv'}, {out / 'pareto.png'}")


if __name__ == "__main__":
    main()
