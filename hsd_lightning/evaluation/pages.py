"""Results as pages: ``docs/results/<task>.md`` (and ``speed.md``), their figures, and the README's glance table,
all written from the committed run summaries (``evaluation/runs.py``) and one ``page.yaml`` per task.

    python -m hsd_lightning pages            # rewrite every page, figure and the README glance block
    python -m hsd_lightning pages --check    # exit 1 if any of them differs from what the summaries give

``docs/results/<task>/page.yaml`` holds what no summary can: the setup in a few lines, which runs to show first and
what each is (a title, one line, the command that made it), what the texts look like, and what did not work. Every
number on a page comes from a run's ``summary.csv``, every quoted output from its ``predictions.jsonl.gz``.
Runs the page.yaml does not list are shown after, table only, so no committed result is hidden.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import yaml

from .metrics import format_table
from .report import paper_rows, relative_to_vanilla
from .runs import PREDICTIONS, read_predictions, read_summary

RESULTS = Path("docs/results")
README = Path("README.md")
GLANCE_START, GLANCE_END = "<!-- glance:start (written by: python -m hsd_lightning pages) -->", "<!-- glance:end -->"
TASKS = ("e2e", "commongen", "xsum", "cnndm", "healthcaremagic")
S1, S2, SD = "hsd(s=1,min=0,max=10)", "hsd(s=2,min=0,max=10)", "skipdecode(min=8,max=20)"
# the skip-aware targets (as in evaluation/targets.py): % of vanilla R-L and BERTScore kept, at most this share of L
TARGETS = {S1: (95.0, 0.62), S2: (90.0, 0.50)}
VANILLA_COST = 3.0


def _rows(task_dir: Path, run: str) -> list[dict]:
    folder = task_dir / "runs" / run
    if not (folder / "summary.csv").is_file():
        raise SystemExit(f"{task_dir / 'page.yaml'} names run {run!r}, but {folder}/summary.csv does not exist; "
                         f"runs there: {', '.join(sorted(p.name for p in (task_dir / 'runs').iterdir()))}")
    rows = read_summary(folder)
    order = {"vanilla": 0, "calm": 1, "skipdecode": 2, "hsd": 3}
    rows.sort(key=lambda r: (order.get(r["decoder"].split("(")[0], 9), -(r.get("avg_layer") or 0)))
    relative_to_vanilla(rows)  # % of this run's own vanilla, speed-up over it
    return rows


def _table(rows: list[dict]) -> str:
    clean = [{k: (float("nan") if v is None and k not in ("decoder",) else v) for k, v in r.items()} for r in rows]
    for r in clean:
        if isinstance(r.get("examples"), float):
            r["examples"] = str(int(r["examples"]))
    return format_table(clean)


def _by(rows: list[dict], decoder: str) -> dict | None:
    return next((r for r in rows if r["decoder"] == decoder), None)


def _kept(row: dict | None, vanilla: dict) -> str:
    if row is None:
        return "–"
    share = row["avg_layer"] / vanilla["avg_layer"]
    text = f"{row['pct_rougeL']:.1f} / {row['pct_bertscore']:.1f} % @ {share:.2f} L"
    if row["decoder"] in TARGETS:
        keep, depth = TARGETS[row["decoder"]]
        met = row["pct_rougeL"] >= keep and row["pct_bertscore"] >= keep and share <= depth
        text += ": **met**" if met else ": not met"
    return text


def glance_row(task_dir: Path, spec: dict) -> str:
    rows = _rows(task_dir, spec["run"])
    vanilla = _by(rows, "vanilla")
    cost = "–"
    if spec.get("baseline"):
        base = _by(_rows(task_dir, spec["baseline"]), "vanilla")
        pct = 100.0 * (1 - vanilla["rougeL"] / base["rougeL"])
        cost = f"{pct:.1f} % ({'**met**' if pct <= VANILLA_COST else 'not met'})"
    inputs = int(vanilla["examples"])
    decoding = "greedy" if vanilla["num_beams"] == 1 else f"beam {vanilla['num_beams']}"
    link = f"[{spec['task_label']}](docs/results/{task_dir.name}.md)" if "task_label" in spec else task_dir.name
    return (f"| {link} ({inputs}, {decoding}) | {spec['label']} | {_kept(_by(rows, S1), vanilla)} | "
            f"{_kept(_by(rows, S2), vanilla)} | {_kept(_by(rows, SD), vanilla)} | {cost} |")


GLANCE_HEAD = ("| task (test inputs, decoding) | weights | HSD s=1 E_max 10 (≥ 95 % at ≤ 0.62 L) | "
               "HSD s=2 E_max 10 (≥ 90 % at ≤ 0.50 L) | SkipDecode (8, 20) | vanilla R-L cost vs standard FT (≤ 3 %) |\n"
               "|---|---|---|---|---|---|")


FIDELITY_HEAD = ("| task | weights | SER % (E2E slots): vanilla / HSD s=1 / HSD s=2 | outputs with a repeated trigram %: "
                 "vanilla / s=1 / s=2 | with a doubled word % | length / vanilla: s=1 / s=2 | fidelity targets: s=1 / "
                 "s=2 |\n|---|---|---|---|---|---|---|")


def _trio(rows: list[dict], key: str, fmt: str = "{:.1f}") -> str:
    vals = [(_by(rows, d) or {}).get(key) for d in ("vanilla", S1, S2)]
    return " / ".join("–" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v) for v in vals)


def fidelity_row(task_dir: Path, spec: dict) -> str:
    """What a reader notices, for the glance weights: slot errors (E2E), repeats, length against vanilla."""
    rows = _rows(task_dir, spec["run"])
    from .targets import fidelity_checks

    ratios = [(_by(rows, d) or {}).get("length_ratio") for d in (S1, S2)]
    verdict = {c["decoder"]: "**met**" if c["met"] else "not met" for c in fidelity_checks({"run": rows})}
    return (f"| {spec['task_label']} | {spec['label']} | {_trio(rows, 'ser')} | {_trio(rows, 'repeat3', '{:.0f}')} | "
            f"{_trio(rows, 'repeat1', '{:.0f}')} | " + " / ".join("–" if r is None else f"{r:.2f}" for r in ratios)
            + f" | {verdict.get(S1, '–')} / {verdict.get(S2, '–')} |")


def glance_table(root: Path = RESULTS) -> str:
    lines, fidelity = [GLANCE_HEAD], [FIDELITY_HEAD]
    for task in TASKS:
        page = yaml.safe_load((root / task / "page.yaml").read_text())
        for spec in page.get("glance", []):
            lines.append(glance_row(root / task, {**spec, "task_label": page["short"]}))
            fidelity.append(fidelity_row(root / task, {**spec, "task_label": page["short"]}))
    note = ("% R-L / % BERTScore of the same weights' vanilla, at the share of its 30 layers run per generated token. "
            "Each task page says how the weights were trained and what the texts look like.")
    fid_note = ("What ROUGE does not show, same runs (`evaluation/fidelity.py`): SER = E2E slots missed, wrong or added "
                "per MR slot (a rule-based matcher that agrees with hand labels on 99.7 % of held-out slots, "
                "[labels](docs/results/e2e/slot_errors_hand.md)); a repeat counts when no reference repeats it. Fidelity "
                "targets (issue 34): >= 97 % of vanilla's R-L and BERTScore, SER <= 1.25x vanilla's, repeats <= "
                "vanilla's + 2 points, length within 5 %, at <= 0.62 / 0.50 L ([targets](docs/results/targets.md)).")
    return "\n".join(lines) + "\n\n" + note + "\n\n" + "\n".join(fidelity) + "\n\n" + fid_note


def _examples(task_dir: Path, run: str, ids: list[str] | None, n: int) -> str:
    path = task_dir / "runs" / run / PREDICTIONS
    records = read_predictions(path)
    picked = [r for r in records if r["id"] in ids] if ids else records[:n]
    decoders = [r["decoder"] for r in _rows(task_dir, run)]
    out = []
    for rec in picked:
        text = rec["input"] if len(rec["input"]) <= 300 else rec["input"][:300] + " …"
        out.append(f"- **{rec['id']}** {text}")
        for dec in decoders:
            if dec in rec["outputs"]:
                pred = rec["outputs"][dec]["prediction"]
                out.append(f"  - *{dec}*: {pred if len(pred) <= 400 else pred[:400] + ' …'}")
    return "\n".join(out)


def figure(task: str, task_dir: Path, page: dict, path: Path) -> None:
    from .report import plot_fig1

    groups = {}
    for spec in page.get("runs", []):
        rows = _rows(task_dir, spec["run"])
        rows[0].setdefault("model", "")
        groups[f"{task} / {rows[0]['model']} / {spec['title']}"] = [{**r, "num_layers": 30} for r in rows]
    plot_fig1(page["dataset"], groups, paper_rows(page["dataset"]), path)


def task_page(task: str, root: Path = RESULTS) -> str:
    task_dir = root / task
    page = yaml.safe_load((task_dir / "page.yaml").read_text())
    md = [f"# {page['title']}", "", "<!-- written by `python -m hsd_lightning pages` from page.yaml and runs/*/ -->", "",
          "## Setup", "", page["setup"].strip(), ""]
    md += [f"![quality kept against layers run]({task}.png)", "",
           "*Quality kept (% of the same weights' vanilla) against the share of layers run per generated token; "
           "hollow grey: the paper's GPT-2 large.*", "", "## Results", ""]
    shown = set()
    for spec in page.get("runs", []):
        shown.add(spec["run"])
        rows = _rows(task_dir, spec["run"])
        md += [f"### {spec['title']}", "", spec["what"].strip(), "", _table(rows), "",
               f"Run summary and every output: [`runs/{spec['run']}/`]({task}/runs/{spec['run']}/)"
               + (f"; made by `{spec['command'].strip()}`" if spec.get("command") else "") + ".", ""]
    if page.get("examples"):
        ex = page["examples"]
        md += ["## What the texts look like", "", page.get("texts", "").strip(), "",
               f"Outputs of *{ex['title']}* (`runs/{ex['run']}`):", "",
               _examples(task_dir, ex["run"], ex.get("ids"), ex.get("n", 3)), ""]
    if page.get("did_not_work"):
        md += ["## What did not work", ""] + [f"- {item.strip()}" for item in page["did_not_work"]] + [""]
    others = sorted(p.name for p in (task_dir / "runs").iterdir() if p.is_dir() and p.name not in shown)
    if others:
        md += ["## Other runs", "", "Earlier stages and variants, table only (their outputs are in each folder).", ""]
        for run in others:
            md += [f"### `{run}`", "", _table(_rows(task_dir, run)), ""]
    return "\n".join(md).rstrip() + "\n"


def speed_page(root: Path = RESULTS) -> str:
    folder = root / "speed"
    page = yaml.safe_load((folder / "page.yaml").read_text())
    md = [f"# {page['title']}", "",
          "<!-- written by `python -m hsd_lightning pages` from speed/page.yaml and speed/*/results.md -->",
          "", page["setup"].strip(), ""]
    for spec in page["benchmarks"]:
        body = (folder / spec["folder"] / "results.md").read_text().strip()
        body = "\n".join(("##" + line) if line.startswith("#") else line for line in body.splitlines())
        md += [f"## {spec['title']}", "", spec["what"].strip(), "", f"`{spec['command']}`", "", body, ""]
    return "\n".join(md).rstrip() + "\n"


def outputs(root: Path = RESULTS, readme: Path = README) -> dict[Path, str]:
    """Every text file the command writes, path -> content (figures are written, not compared)."""
    files = {root / f"{task}.md": task_page(task, root) for task in TASKS}
    files[root / "speed.md"] = speed_page(root)
    text = readme.read_text()
    if GLANCE_START in text and GLANCE_END in text:
        head, rest = text.split(GLANCE_START, 1)
        tail = rest.split(GLANCE_END, 1)[1]
        files[readme] = f"{head}{GLANCE_START}\n{glance_table(root)}\n{GLANCE_END}{tail}"
    return files


def overview_figure(root: Path, path: Path) -> None:
    """The README's picture: per task, the glance weights' decoders as quality kept against layers run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    markers = {"vanilla": "*", "skipdecode": "^", "hsd": "o", "calm": "s"}
    for i, task in enumerate(TASKS):
        page = yaml.safe_load((root / task / "page.yaml").read_text())
        for spec in page.get("glance", [])[:1]:
            rows = _rows(root / task, spec["run"])
            colour = plt.rcParams["axes.prop_cycle"].by_key()["color"][i]
            for r in rows:
                fam = r["decoder"].split("(")[0]
                if "always" in r["decoder"] or r.get("pct_rougeL") is None or math.isnan(r["pct_rougeL"]):
                    continue
                ax.scatter(r["avg_layer"] / 30, r["pct_rougeL"], marker=markers.get(fam, "x"), color=colour, s=50,
                           label=page["short"] if fam == "vanilla" else None)
    ax.axhline(100, color="black", lw=0.6, ls=":")
    ax.set_xlabel("share of layers run per generated token")
    ax.set_ylabel("% of vanilla ROUGE-L")
    ax.set_title("SmolLM2-135M, skip-aware fine-tuned: ★ vanilla, ▲ SkipDecode, ● HSD, ■ CALM (one colour per task)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=str(RESULTS), help="the results folder (default docs/results)")
    p.add_argument("--readme", default=str(README), help="README whose glance block is rewritten")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a page or the README block is stale")
    args = p.parse_args(argv)
    root, readme = Path(args.root), Path(args.readme)
    files = outputs(root, readme)
    stale = [str(path) for path, text in files.items() if not path.exists() or path.read_text() != text]
    if args.check:
        if stale:
            print(f"stale: {', '.join(stale)}; run python -m hsd_lightning pages", file=sys.stderr)
            raise SystemExit(1)
        print(f"up to date: {len(files)} files")
        return
    for path, text in files.items():
        path.write_text(text)
    for task in TASKS:
        page = yaml.safe_load((root / task / "page.yaml").read_text())
        figure(task, root / task, page, root / f"{task}.png")
    overview_figure(root, root / "overview.png")
    print(f"wrote {len(files)} pages/blocks and {len(TASKS) + 1} figures under {root}")


if __name__ == "__main__":
    main()
