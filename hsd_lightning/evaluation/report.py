"""Turn run folders (each with a metrics.json) into the paper's table (Markdown + CSV) and a Pareto plot.

    python -m hsd_lightning report runs/sweep [more folders] --out runs/sweep/report
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

from .metrics import format_table
from .runs import source_line  # noqa: F401  (the reports' input line; re-exported)

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


def group_title(r: dict) -> str:
    """Runs are kept apart by dataset, model, the weights decoded (zero-shot / FT / skip-aware FT, and which
    checkpoint), beam width and the split decoded (where the run records it): only rows of one group are compared
    with each other."""
    ckpt = r.get("checkpoint")
    weights = r.get("training", "zero-shot")
    if ckpt and ckpt.startswith("adapter:"):
        weights += f" ({ckpt})"
    elif ckpt:  # runs/<name>/version_N/checkpoints/last.ckpt -> <name>/last.ckpt
        weights += f" ({Path(ckpt).parent.parent.parent.name}/{Path(ckpt).name})"
    beams = r.get("num_beams")
    split = {"validation": "dev"}.get(r.get("split") or "", r.get("split"))
    return (f"{r.get('dataset')} / {r.get('model')} / {weights} / " + ("greedy" if beams == 1 else f"beam {beams}")
            + (f" / {split} split" if split else ""))


def _finite(v) -> bool:
    try:
        return v not in (None, "") and math.isfinite(float(v)) and float(v) > 0
    except (TypeError, ValueError):
        return False


def relative_to_vanilla(rows: list[dict]) -> None:
    """Speed-up, % of vanilla R-L / BERTScore and length / vanilla against the vanilla row of the same list (when
    there is one)."""
    base = next((r for r in rows if r.get("decoder_name", r.get("decoder")) == "vanilla"), None)
    if base is None:
        return
    for r in rows:
        if base.get("tokens_per_second") and r.get("tokens_per_second"):
            r["speedup"] = r["tokens_per_second"] / base["tokens_per_second"]
        for key, pct in (("rougeL", "pct_rougeL"), ("bertscore", "pct_bertscore")):
            if base.get(key) and not math.isnan(base[key]) and r.get(key) is not None:
                r[pct] = 100.0 * r[key] / base[key]
        if base.get("mean_words") and r.get("mean_words") is not None:  # same inputs: mean length against vanilla's
            r["length_ratio"] = r["mean_words"] / base["mean_words"]
        layer, head, L = r.get("flops_layer"), r.get("flops_head"), r.get("num_layers")
        if layer and head and L and r.get("avg_layer"):  # what the layers skipped allow, the LM head counted
            r["ideal_speedup"] = (L * layer + head) / (r["avg_layer"] * layer + head)
            if r.get("speedup"):
                r["of_ideal"] = r["speedup"] / r["ideal_speedup"]
        if _finite(base.get("seconds_per_pass")) and _finite(r.get("seconds_per_pass")):
            # per forward pass of the layer stack: the speed-up a step gives, whatever steps beam search runs on
            r["pass_speedup"] = base["seconds_per_pass"] / r["seconds_per_pass"]
            if r.get("ideal_speedup"):
                r["pass_of_ideal"] = r["pass_speedup"] / r["ideal_speedup"]


def build_rows(runs: list[dict]) -> dict[str, list[dict]]:
    """Rows grouped by ``group_title``, sorted like the paper, with speed-up and % of vanilla per group; a run with
    ``generation_kwargs`` (``no_repeat_ngram_size``...) is its decoder's row with them named, in the same group."""
    groups: dict[str, list[dict]] = {}
    for r in runs:
        if r.get("generation_kwargs"):  # e.g. n-gram blocking: its own row beside the same decoder without it
            r["decoder"] = f"{r['decoder']} + " + ",".join(f"{k}={v}" for k, v in sorted(r["generation_kwargs"].items()))
        groups.setdefault(group_title(r), []).append(r)
    for rows in groups.values():
        rows.sort(key=lambda r: (FAMILY_ORDER.get(r.get("decoder_name"), 9), -r.get("avg_layer", 0)))
        relative_to_vanilla(rows)
    return groups


def paper_rows(dataset: str | None, model: str = "GPT-2") -> list[dict]:
    """The paper's rows for a dataset (GPT-2 large, 36 layers, full FT, beam 4), with % of vanilla."""
    tables = json.loads((Path(__file__).with_name("paper_tables.json")).read_text())["tables"]
    rows = [dict(r) for r in tables.get(dataset or "", {}).get(model, [])]
    relative_to_vanilla(rows)
    return rows


def save_runs(groups: dict[str, list[dict]], task_dir: Path) -> list[Path]:
    """Each group (one set of weights, one decoding) as a committed run: ``<task_dir>/runs/<run>/summary.csv`` and
    ``predictions.jsonl.gz`` (every decoder's output per input; ``evaluation/runs.py``), which ``pages`` reads."""
    from .runs import run_name, write_run

    written = []
    for rows in groups.values():
        records = {}
        for r in rows:
            src = Path(r["run"]) / "predictions.jsonl"
            if src.exists():
                records[r["decoder"]] = [json.loads(x) for x in src.read_text(encoding="utf-8").splitlines() if x.strip()]
        written.append(write_run(Path(task_dir) / "runs" / run_name(rows[0]), rows, records))
    return written


def first_difference(preds: dict[str, list[dict]]) -> int | None:
    """Index of the first input where a decoder's output differs from vanilla's (None: none does, or no vanilla)."""
    base = preds.get("vanilla")
    if base is None:
        return None
    for i, rec in enumerate(base):
        if any(i < len(recs) and recs[i]["prediction"] != rec["prediction"] for recs in preds.values()):
            return i
    return None


def examples_text(groups: dict[str, list[dict]], n: int) -> str:
    """The first ``n`` inputs of each group with every decoder's prediction and one reference, and, chosen by rule,
    the first input where a skipping decoder's output differs from vanilla's (when the first ``n`` hold none)."""
    parts = []
    for title, rows in groups.items():
        preds = {}
        for r in rows:
            path = Path(r["run"]) / "predictions.jsonl"
            if path.exists():
                preds[r["decoder"]] = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        if not preds:
            continue
        parts.append(f"#### Examples: {title}\n")
        first = next(iter(preds.values()))
        shown = list(range(min(n, len(first))))
        diff = first_difference(preds)
        for i in shown + ([diff] if diff is not None and diff >= n else []):
            rec = first[i]
            note = " *(the first input where a skipping decoder's output differs from vanilla's)*" if i == diff else ""
            parts.append(f"- **input** {source_line(rec['prompt'])}{note}")
            for dec, recs in preds.items():
                if i < len(recs):
                    parts.append(f"  - *{dec}*: {recs[i]['prediction']}")
            if rec["references"]:
                parts.append(f"  - *reference*: {rec['references'][0]}")
        parts.append("")
    return "\n".join(parts)


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
            ax.set_title(f"{title}\n{label} vs. depth", fontsize=8)
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_fig1(dataset: str, groups: dict[str, list[dict]], paper: list[dict], path: Path) -> None:
    """The paper's Fig. 1 for one task, every set of weights on the same axes: quality kept (% of the group's own
    vanilla) against the share of layers run per generated token, so that 30-layer SmolLM2 and the paper's 36-layer
    GPT-2 (hollow grey markers) sit on one scale. Colour = weights decoded, marker = decoder family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    series = list(groups.items()) + ([("paper: GPT-2 large, full FT", paper)] if paper else [])
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, pct, label in ((axes[0], "pct_rougeL", "% of vanilla ROUGE-L"),
                           (axes[1], "pct_bertscore", "% of vanilla BERTScore")):
        for i, (title, rows) in enumerate(series):
            is_paper = title.startswith("paper")
            colour = "grey" if is_paper else colours[i % len(colours)]
            name = title if is_paper else title.split(" / ", 2)[-1]  # dataset and model are the figure's title
            depth = max(r["avg_layer"] for r in rows)  # L where a run does not record num_layers: vanilla's depth
            labelled = False
            for fam, marker in MARKERS.items():
                pts = [(r["avg_layer"] / (r.get("num_layers") or depth), r[pct],
                        r["decoder"]) for r in rows
                       if (r.get("decoder_name") or r["decoder"].split("(")[0]) == fam and r.get(pct) is not None
                       and not math.isnan(r[pct])]
                if not pts:
                    continue
                ax.scatter([x for x, _, _ in pts], [y for _, y, _ in pts], marker=marker, s=60,
                           facecolors="none" if is_paper else colour, edgecolors=colour,
                           label=None if labelled else name)
                labelled = True
                for x, y, dec in pts:
                    if fam != "vanilla":
                        ax.annotate(dec.split("(")[-1].rstrip(")"), (x, y), fontsize=6, xytext=(3, 2),
                                    textcoords="offset points", color=colour)
        ax.axhline(100, color="black", lw=0.6, ls=":")
        ax.set_xlabel("share of layers run per generated token (Avg. Layer / L)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    from matplotlib.lines import Line2D

    shapes = [Line2D([], [], ls="", marker=m, color="black", label=f) for f, m in MARKERS.items()]
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=6, loc="best", title="weights decoded (colour)", title_fontsize=6)
    axes[1].legend(handles=shapes, fontsize=6, loc="best", title="decoder (marker)", title_fontsize=6)
    model = next((r.get("model") for rows in groups.values() for r in rows), "")
    fig.suptitle(f"{dataset} / {model}: quality kept vs. depth (the paper's Fig. 1)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+")
    p.add_argument("--out", default=None, help="output folder (default: <first folder>/report)")
    p.add_argument("--examples", type=int, default=0,
                   help="also print the first N inputs with every decoder's output, and the first input where a "
                        "skipping decoder differs from vanilla")
    p.add_argument("--no_paper", action="store_true", help="leave out the paper's GPT-2 rows")
    p.add_argument("--save_runs", default=None, metavar="TASK_DIR",
                   help="also write each group as a committed run summary under TASK_DIR/runs/<run>/ (summary.csv, "
                        "predictions.jsonl.gz), e.g. docs/results/e2e; then `python -m hsd_lightning pages`")
    args = p.parse_args(argv)
    runs = load_runs(args.folders)
    if not runs:
        raise SystemExit(f"no metrics.json under {args.folders}: nothing to report")
    groups = build_rows(runs)
    out = Path(args.out or Path(args.folders[0]) / "report")
    out.mkdir(parents=True, exist_ok=True)
    md = []
    cols = ["dataset", "model", "training", "num_beams", "decoder", "avg_layer", "rouge1", "rouge2", "rougeL",
            "pct_rougeL", "bleu1", "bleu4", "bertscore", "pct_bertscore", "ser", "slots_missed", "slots_wrong",
            "slots_added", "slots_total", "repeat3", "repeat1", "mean_words", "length_ratio", "agreement",
            "tokens_per_second", "speedup", "ideal_speedup", "of_ideal", "seconds_per_pass", "pass_speedup",
            "pass_of_ideal", "examples", "empty_predictions", "t_max", "split", "flops_layer", "flops_head", "num_layers",
            "checkpoint", "run"]
    with (out / "report.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for title, rows in groups.items():
            md.append(f"### {title}\n\n{format_table(rows)}\n")
            w.writerows(rows)
        for dataset in ([] if args.no_paper else dict.fromkeys(r.get("dataset") for r in runs)):
            paper = paper_rows(dataset)
            if paper:
                md.append(f"### {dataset}: the paper's GPT-2 large (36 layers, full FT, beam 4), for comparison\n\n"
                          f"{format_table(paper)}\n")
    if args.examples:
        md.append(examples_text(groups, args.examples))
    if args.save_runs:
        for folder in save_runs(groups, Path(args.save_runs)):
            print(f"wrote run summary {folder}")
    (out / "report.md").write_text("\n".join(md))
    plot(groups, out / "pareto.png")
    for dataset in dict.fromkeys(r.get("dataset") for r in runs):
        mine = {t: rows for t, rows in groups.items() if rows[0].get("dataset") == dataset}
        plot_fig1(str(dataset), mine, [] if args.no_paper else paper_rows(dataset), out / f"fig1_{dataset}.png")
    print("\n".join(md))
    print(f"wrote {out / 'report.md'}, {out / 'report.csv'}, {out / 'pareto.png'}")


if __name__ == "__main__":
    main()
