"""Is a difference in R-L (or BERTScore) between two runs on the same test inputs more than the choice of inputs?
A paired bootstrap.

    python -m hsd_lightning bootstrap <run A> <run B> [--shared] [--metric rougeL|bertscore]
        [--references <sweep folder | dataset>] [--data_dir <data root>] [--samples 2000]

A run is a folder with ``predictions.jsonl`` (one decoder's sweep output, references included) or a committed
predictions file of a report (``docs/results/<task>/predictions/<run>/<decoder>.jsonl``, which holds no references:
they come from the other run when it is a sweep folder, or from ``--references``: a sweep folder over the same
inputs, or a dataset name (``e2e``, ``commongen``, ``xsum``, ``cnn_dailymail``, ``healthcaremagic``) whose split
``--split`` is read from the data root, ``--data_dir`` or ``$HSD_DATA_DIR``, with the task's default prompt template:
so two committed files compare on a fresh clone). The two runs are paired by *input* (the prompt's
source line, what the reports show as "input"): until 2026-12-01 an id was an input's position in the test subset a
config draws, so predictions written before then (the committed reports) give one id to different inputs where two
configs draw their subsets differently (``shuffle_subset``).
Both runs must hold the same inputs, or with ``--shared`` the comparison uses the inputs both hold (printed).
Each input's R-L is torchmetrics' ROUGE-L F1 (stemmed, best over the references), so the mean over inputs is the
table's R-L; ``--metric bertscore``: each input's BERTScore F1 against its best reference with the tables' encoder
(``metrics.best_bertscore``, 0-100), whose mean is the table's BERTScore. The inputs are resampled with replacement; each
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

from ..library_noise import quiet_libraries
from .metrics import best_bertscore, default_bertscore_model
from .runs import source_line
from .writer import read_records

METRICS = {"rougeL": "R-L", "bertscore": "BERTScore"}


def per_input_rouge_l(records: dict) -> dict:
    """``{key: ROUGE-L F1 (0-100)}``; inputs without a non-empty reference are left out, as in the tables."""
    out = {}
    for i, r in records.items():
        refs = [x for x in r["references"] if x.strip()]
        if refs:
            s = rouge_score(r["prediction"], [refs], use_stemmer=True, rouge_keys="rougeL", accumulate="best")
            out[i] = 100 * float(s["rougeL_fmeasure"])
    return out


def per_input_bertscore(records: dict, scorer) -> dict:
    """``{key: BERTScore F1 (0-100) against the best reference}`` (``scorer``: a ``PairBERTScore``), the inputs of
    ``per_input_rouge_l``."""
    keys = [k for k, r in records.items() if any(x.strip() for x in r["references"])]
    refs = [[x for x in records[k]["references"] if x.strip()] for k in keys]
    best = best_bertscore(scorer, [records[k]["prediction"] for k in keys], refs)
    return {k: 100 * f for k, f in zip(keys, best)}


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
    """The records of a sweep folder (``predictions.jsonl``), a predictions file, or one decoder of a committed run
    (``docs/results/<task>/runs/<run>/predictions.jsonl.gz#<decoder>``)."""
    from .runs import decoder_records

    committed = decoder_records(run)
    if committed is not None:
        return committed
    run = Path(run)
    if run.is_file():
        return [json.loads(line) for line in run.read_text(encoding="utf-8").splitlines() if line.strip()]
    if (run / "predictions.jsonl").exists():
        return list(read_records(run).values())
    raise ValueError(f"{run} is neither a predictions file nor a sweep folder with predictions.jsonl; give "
                     "runs/results/<task>/<run>/<decoder> or docs/results/<task>/runs/<run>/predictions.jsonl.gz#<decoder>")


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


def references_from_data(dataset: str, data_dir: str | None = None, split: str = "test") -> dict[str, dict]:
    """``{key: {"prompt", "references"}}`` for the inputs of ``dataset``'s ``split``, read as the data module reads
    it (the data root, else the packaged sample) and shown through the task's default prompt template. Keys: the
    input line where it is unique in the split, and every input's id (``<dataset>-<split>-<k>``, the k-th input),
    which ``compare`` uses only where the line repeats and the id's input shows the record's line."""
    from ..data import DATAMODULES

    if dataset not in DATAMODULES:
        raise ValueError(f"--references {dataset!r} is neither a sweep folder nor a dataset; give a folder with "
                         f"predictions.jsonl or one of {', '.join(sorted(DATAMODULES))}")
    from ..data.readers import group_by_source

    dm = DATAMODULES[dataset](data_dir=data_dir)
    rows = [{"id": f"{dataset}-{split}-{k}", "prompt": dm.template.format(source=src), "references": refs}
            for k, (src, refs) in enumerate(group_by_source(dm.pairs(split)))]
    return {**by_unique_input(rows), **{r["id"]: r for r in rows}}


def compare(run_a: Path, run_b: Path, samples: int = 2000, seed: int = 0, shared: bool = False,
            references: Path | str | None = None, metric: str = "rougeL", data_dir: str | None = None,
            split: str = "test") -> dict[str, float]:
    """Paired bootstrap of ``metric`` (``rougeL`` or ``bertscore``), A against B; ``references``: a sweep folder,
    or a dataset name (read from ``data_dir``'s ``split``), that supplies the references (by input line) where
    neither run holds them (two reports' predictions files)."""
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r}; use one of {', '.join(METRICS)}")
    ra, rb = pair_runs(load_run(run_a), load_run(run_b), shared)
    if references is None:
        refs = {}
    elif Path(references).exists():
        refs = by_unique_input(load_run(Path(references)))
    else:
        refs = references_from_data(str(references), data_dir, split)
    for mine, other, name in ((ra, rb, run_a), (rb, ra, run_b)):  # a report's file: references from elsewhere
        for k, rec in mine.items():
            if "references" in rec:
                continue
            source = other[k] if "references" in other[k] else refs.get(input_line(rec), {})
            by_id = refs.get(rec.get("id"), {})
            if "references" not in source and by_id and input_line(by_id) == input_line(rec):
                source = by_id  # a repeated line (an article's boilerplate first line): its id, checked by the line
            if "references" not in source:
                raise ValueError(f"{name} holds no references for {input_line(rec)[:40]!r} and neither does the other "
                                 "run; one of the two must be a sweep folder (its predictions.jsonl keeps the "
                                 "references), or pass --references <sweep folder over the same inputs, or the "
                                 "dataset: e2e, commongen, ...>")
            rec["references"] = source["references"]
    if metric == "rougeL":
        sa, sb = per_input_rouge_l(ra), per_input_rouge_l(rb)
    else:  # one encoder for both runs
        from .bertscore import PairBERTScore

        scorer = PairBERTScore(default_bertscore_model())
        sa, sb = per_input_bertscore(ra, scorer), per_input_bertscore(rb, scorer)
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
                   help="where runs that hold no references (reports' predictions files) take them from: a sweep "
                        "folder over the same inputs, or a dataset name (e2e, commongen, xsum, cnn_dailymail, "
                        "healthcaremagic) read from --data_dir")
    p.add_argument("--data_dir", default=None, help="data root for --references <dataset> (default $HSD_DATA_DIR)")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"],
                   help="the split --references <dataset> reads")
    p.add_argument("--metric", default="rougeL", choices=list(METRICS),
                   help="per-input score to resample: R-L (default) or BERTScore (the tables' encoder)")
    args = p.parse_args(argv)
    quiet_libraries()  # one printed line: no weight-loading bars or load reports of the BERTScore encoder
    try:
        r = compare(Path(args.run_a), Path(args.run_b), args.samples, args.seed, args.shared, args.references,
                    args.metric, args.data_dir, args.split)
    except (ValueError, FileNotFoundError) as err:
        p.error(str(err))
    print(f"{METRICS[args.metric]} on {r['n']} inputs paired by input text: A {r['mean_a']:.2f}, B {r['mean_b']:.2f}; "
          f"A - B {r['diff']:+.2f} [95 % {r['diff_lo']:+.2f}, {r['diff_hi']:+.2f}]; "
          f"A = {r['ratio']:.1f} % of B [{r['ratio_lo']:.1f}, {r['ratio_hi']:.1f}]; "
          f"A higher in {100 * r['p_a_higher']:.1f} % of {args.samples} resamples")


if __name__ == "__main__":
    main()
