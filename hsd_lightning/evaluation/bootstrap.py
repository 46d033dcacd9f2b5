"""Is a difference in R-L between two runs on the same test inputs more than the choice of inputs? A paired bootstrap.

    python -m hsd_lightning.evaluation.bootstrap <run A> <run B> [--shared] [--references <sweep>] [--samples 2000]

A run is a folder with ``predictions.jsonl`` (one decoder's sweep output, references included) or a committed
predictions file of a report (``docs/results/<task>/predictions/<run>/<decoder>.jsonl``, which holds no references:
they come from the other run, which must then be a sweep folder). The two runs are paired by *input* (the prompt's
source line, what the reports show as "input"): until 2026-12-01 an id was an input's position in the test subset a
config draws, so predictions written before then (the committed reports) give one id to different inputs where two
configs draw their subsets differently (``shuffle_subset``).
Both runs must hold the same inputs, or with ``--shared`` the comparison uses the inputs both hold (printed).
Each input's R-L is torchmetrics' ROUGE-L F1 (stemmed, best over the references), so the mean over inputs is the
table's R-L. The inputs are resampled with replacement; each
resample gives mean(A) - mean(B) and 100 * mean(A) / mean(B) (A's "% of B": HSD against vanilla, or a skip-aware
vanilla against the standard fine-tune's). Printed: both means, the difference and the ratio with their 95 %
percentile intervals, and the share of resamples in which A scores higher.

Why hand-written: torchmetrics' ``BootStrapper`` resamples one metric's updates, not two runs paired by input.
"""
from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from pathlib import Path

from torchmetrics.functional.text import rouge_score

from .report import source_line
from .writer import read_records


def per_input_rouge_l(records: dict) -> dict:
    """``{key: ROUGE-L F1 (0-100)}``; inputs without a non-empty reference are left out, as in the tables."""
    out = {}
    for i, r in records.items():
        refs = [x for x in r["references"] if x.strip()]
        if refs:
            s = rouge_score(r["prediction"], [refs], use_stemmer=True, rouge_keys="rougeL", accumulate="best")
            out[i] = 100 * float(s["rougeL_fmeasure"])
    return out


def paired_bootstrap(a: list[float], b: list[float], samples: int = 2000, seed: int = 0) -> dict[str, float]:
    """Means, difference and ratio of two paired score lists, with 95 % percentile intervals over ``samples``
    resamples of the inputs, and ``p_a_higher``: the share of resamples where mean(a) > mean(b)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_bootstrap needs two non-empty lists of equal length, got {len(a)} and {len(b)}")
    n, rng = len(a), random.Random(seed)
    diffs, ratios = [], []
    for _ in range(samples):
        idx = [rng.randrange(n) for _ in range(n)]
        sa, sb = sum(a[i] for i in idx), sum(b[i] for i in idx)
        diffs.append((sa - sb) / n)
        ratios.append(100 * sa / sb if sb else float("inf"))
    diffs.sort()
    ratios.sort()
    lo, hi = int(0.025 * samples), min(samples - 1, int(0.975 * samples))
    ma, mb = sum(a) / n, sum(b) / n
    return {"n": n, "mean_a": ma, "mean_b": mb, "diff": ma - mb, "diff_lo": diffs[lo], "diff_hi": diffs[hi],
            "ratio": 100 * ma / mb if mb else float("inf"), "ratio_lo": ratios[lo], "ratio_hi": ratios[hi],
            "p_a_higher": sum(d > 0 for d in diffs) / samples}


def input_line(rec: dict) -> str:
    """A record's input as the reports show it (the prompt's source line), else its id (records without text)."""
    if "input" in rec:
        return rec["input"]
    return source_line(rec["prompt"]) if rec.get("prompt") else rec["id"]


def load_run(run: Path) -> list[dict]:
    """The records of a sweep folder (``predictions.jsonl``) or of a report's predictions file."""
    run = Path(run)
    if run.is_file():
        return [json.loads(line) for line in run.read_text(encoding="utf-8").splitlines() if line.strip()]
    if (run / "predictions.jsonl").exists():
        return list(read_records(run).values())
    raise ValueError(f"{run} is neither a predictions file nor a sweep folder with predictions.jsonl; give "
                     "runs/results/<task>/<run>/<decoder> or docs/results/<task>/predictions/<run>/<decoder>.jsonl")


def by_unique_input(records: list[dict]) -> dict[str, dict]:
    """``{input line: record}`` for the lines that occur once (an article's first line may be boilerplate)."""
    count = Counter(map(input_line, records))
    return {input_line(r): r for r in records if count[input_line(r)] == 1}


def pair_runs(ra: list[dict], rb: list[dict], shared: bool = False) -> tuple[dict, dict]:
    """The two runs' records under common keys. Runs on the same test subset pair by (id, input line), every
    record; runs on different subsets (or ids written before 2026-12-01, positions in a subset) pair by input line, only with
    ``shared``, over the inputs both hold whose line is unique in each run."""
    a = {(r["id"], input_line(r)): r for r in ra}
    b = {(r["id"], input_line(r)): r for r in rb}
    if set(a) == set(b):
        return a, b
    a, b = by_unique_input(ra), by_unique_input(rb)
    both = set(a) & set(b)
    if len(a) == len(ra) == len(b) == len(rb) == len(both):
        return a, b  # the same inputs, each once, under other ids (ids written before 2026-12-01): pair by input
    if not shared:
        only = len({input_line(r) for r in ra} ^ {input_line(r) for r in rb})
        raise ValueError(f"the two runs hold different inputs ({only} in one only); compare runs decoded on the same "
                         f"test inputs (same data config and max_eval_samples), or pass --shared to use the "
                         f"{len(both)} both hold")
    if not both:
        raise ValueError("the two runs share no input")
    return {k: a[k] for k in both}, {k: b[k] for k in both}


def compare(run_a: Path, run_b: Path, samples: int = 2000, seed: int = 0, shared: bool = False,
            references: Path | None = None) -> dict[str, float]:
    """Paired bootstrap of R-L, A against B; ``references``: a sweep folder that supplies the references (by
    input line) where neither run holds them (two reports' predictions files)."""
    ra, rb = pair_runs(load_run(run_a), load_run(run_b), shared)
    refs = by_unique_input(load_run(references)) if references is not None else {}
    for mine, other, name in ((ra, rb, run_a), (rb, ra, run_b)):  # a report's file: references from elsewhere
        for k, rec in mine.items():
            if "references" in rec:
                continue
            source = other[k] if "references" in other[k] else refs.get(input_line(rec), {})
            if "references" not in source:
                raise ValueError(f"{name} holds no references for {input_line(rec)[:40]!r} and neither does the other "
                                 "run; one of the two must be a sweep folder (its predictions.jsonl keeps the "
                                 "references), or pass --references <sweep folder over the same inputs>")
            rec["references"] = source["references"]
    sa, sb = per_input_rouge_l(ra), per_input_rouge_l(rb)
    if set(sa) != set(sb):  # an input without a non-empty reference in one run only
        raise ValueError(f"{run_a} and {run_b}: {len(set(sa) ^ set(sb))} inputs have references in one run only")
    keys = sorted(sa)
    return paired_bootstrap([sa[k] for k in keys], [sb[k] for k in keys], samples, seed)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shared", action="store_true", help="compare on the inputs both runs hold")
    p.add_argument("--references", default=None,
                   help="a sweep folder whose references serve runs that hold none (reports' predictions files)")
    args = p.parse_args(argv)
    try:
        r = compare(Path(args.run_a), Path(args.run_b), args.samples, args.seed, args.shared,
                    Path(args.references) if args.references else None)
    except ValueError as err:
        p.error(str(err))
    print(f"R-L on {r['n']} inputs paired by input text: A {r['mean_a']:.2f}, B {r['mean_b']:.2f}; "
          f"A - B {r['diff']:+.2f} [95 % {r['diff_lo']:+.2f}, {r['diff_hi']:+.2f}]; "
          f"A = {r['ratio']:.1f} % of B [{r['ratio_lo']:.1f}, {r['ratio_hi']:.1f}]; "
          f"A higher in {100 * r['p_a_higher']:.1f} % of {args.samples} resamples")


if __name__ == "__main__":
    main()
