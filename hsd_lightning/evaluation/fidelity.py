"""What a reader notices that ROUGE does not: repeated phrases, length, and (on E2E) slots lost, wrong or invented.

Per output (``fidelity_counts``), summed over a run by ``GenerationScores``:

* ``repeat3``: a word trigram occurs twice or more ("5 out of 5 out of 5", "Café Café Café"), and no reference of the
  input repeats that trigram;
* ``repeat1``: a word follows itself ("Café Café"), and no reference of the input has that word twice in a row;
* ``words``: its length in words (the tables' ``length / vanilla`` is the mean against vanilla's, same inputs);
* E2E only (the input is an MR, ``slots.parse_mr``): its slots and the missed / wrong / added ones (``slots.py``).

Words are lower-cased runs of letters and digits (punctuation dropped: "café." is "café"), so a repeat that differs
only in punctuation still counts.
"""
from __future__ import annotations

import re
from pathlib import Path

from .runs import source_line
from .slots import parse_mr, slot_counts

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def repeated_ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    """The word n-grams that occur more than once."""
    seen, twice = set(), set()
    for i in range(len(tokens) - n + 1):
        g = tuple(tokens[i:i + n])
        (twice if g in seen else seen).add(g)
    return twice


def doubled_words(tokens: list[str]) -> set[str]:
    """Words that directly follow themselves."""
    return {a for a, b in zip(tokens, tokens[1:]) if a == b}


def repeats(prediction: str, references: list[str]) -> dict[str, int]:
    """``{"repeat3": 0|1, "repeat1": 0|1}``: the output repeats a trigram / doubles a word that none of its
    references repeats (a reference's own "out of 5 ... out of 5" does not make the output's a fault)."""
    toks = words(prediction)
    ref_toks = [words(r) for r in references]
    tri = repeated_ngrams(toks, 3) - set().union(*(repeated_ngrams(r, 3) for r in ref_toks))
    dbl = doubled_words(toks) - set().union(*(doubled_words(r) for r in ref_toks))
    return {"repeat3": int(bool(tri)), "repeat1": int(bool(dbl))}


def fidelity_counts(record: dict) -> dict[str, int]:
    """Counts for one predict record (``prediction``, ``references``, ``prompt`` or ``input``): ``words``, and when
    it has a reference ``repeat3``/``repeat1``, and when its input is an E2E MR ``slots``/``missed``/``wrong``/
    ``added``."""
    pred = record["prediction"]
    out = {"words": len(words(pred))}
    refs = [r for r in record.get("references", []) if r.strip()]
    if refs:
        out.update(repeats(pred, refs))
    source = record.get("input") or source_line(record.get("prompt", ""))
    mr = parse_mr(source) if source else None
    if mr:
        out.update(slot_counts(mr, pred))
    return out


def summarise(counts: list[dict[str, int]]) -> dict[str, float]:
    """Run-level measures from ``fidelity_counts`` of its outputs: ``repeat3``/``repeat1`` (% of the outputs with a
    reference), ``mean_words``, ``ser`` (% of MR slots) with ``slots_missed``/``slots_wrong``/``slots_added``
    (counts); NaN where no output has what a measure needs."""
    nan = float("nan")
    scored = [c for c in counts if "repeat3" in c]
    mrs = [c for c in counts if "slots" in c]
    slots = sum(c["slots"] for c in mrs)
    errs = {k: sum(c[k] for c in mrs) for k in ("missed", "wrong", "added")}
    return {
        "repeat3": 100.0 * sum(c["repeat3"] for c in scored) / len(scored) if scored else nan,
        "repeat1": 100.0 * sum(c["repeat1"] for c in scored) / len(scored) if scored else nan,
        "mean_words": sum(c["words"] for c in counts) / len(counts) if counts else nan,
        "ser": 100.0 * sum(errs.values()) / slots if slots else nan,
        **{f"slots_{k}": float(v) if mrs else nan for k, v in errs.items()},
        "slots_total": float(slots) if mrs else nan,
    }


def add_to_runs(folders: list[Path], data_dir: str | None = None) -> list[Path]:
    """Add the fidelity columns to committed runs' ``summary.csv`` (``evaluation/runs.py``), computed from their
    ``predictions.jsonl.gz``; the references come from the data (by input id ``<dataset>-<split>-<k>``), for the
    committed predictions do not hold them. Returns the summaries rewritten."""
    import csv

    from .bootstrap import references_from_data
    from .runs import COLUMNS, PREDICTIONS, SUMMARY, read_predictions

    refs_cache: dict[tuple[str, str], dict] = {}
    written = []
    for folder in folders:
        summary, preds = Path(folder) / SUMMARY, Path(folder) / PREDICTIONS
        if not (summary.is_file() and preds.is_file()):
            continue
        with summary.open(newline="") as f:
            reader = csv.DictReader(f)
            header, rows = list(reader.fieldnames or []), list(reader)
        records = read_predictions(preds)
        by_decoder: dict[str, list[dict]] = {}
        for rec in records:
            dataset, split = rec["id"].rsplit("-", 2)[:2]
            if (dataset, split) not in refs_cache:
                refs_cache[dataset, split] = references_from_data(dataset, data_dir, split)
            refs = refs_cache[dataset, split].get(rec["id"], {}).get("references", [])
            for dec, out in rec["outputs"].items():
                by_decoder.setdefault(dec, []).append(
                    fidelity_counts({"prediction": out["prediction"], "references": refs, "input": rec["input"]}))
        for row in rows:
            if row["decoder"] in by_decoder:
                row.update({k: f"{v:.6g}" for k, v in summarise(by_decoder[row["decoder"]]).items()})
                if not row.get("split"):
                    row["split"] = records[0]["id"].rsplit("-", 2)[1]
        fields = [c for c in COLUMNS if c in header or any(c in r for r in rows)] + \
                 [c for c in header if c not in COLUMNS]
        with summary.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        written.append(summary)
    return written


def hand_agreement(path: Path) -> list[dict]:
    """The slot matcher against hand labels (``docs/results/e2e/slot_errors_hand.jsonl``: per output its MR, text,
    each slot's hand label ok/missed/wrong and the added slots), one row per sample and decoder and one per sample:
    hand and matcher SER, agreement on each slot (error or not; and the exact label), Cohen's kappa of the former."""
    import json

    from .slots import match_slots

    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    cells: dict[tuple[str, str], list[tuple[str, str]]] = {}
    added: dict[tuple[str, str], list[int]] = {}
    for r in rows:
        got = match_slots(parse_mr(r["mr"]), r["prediction"])
        for key in ((r["sample"], r["decoder"]), (r["sample"], "all")):
            cells.setdefault(key, []).extend((h, got["slots"][s]) for s, h in r["slots"].items())
            a = added.setdefault(key, [0, 0, 0])
            a[0], a[1], a[2] = a[0] + len(r["added"]), a[1] + len(got["added"]), a[2] + 1
    out = []
    for (sample, decoder), pairs in cells.items():
        n = len(pairs)
        err = [(h != "ok", m != "ok") for h, m in pairs]
        agree = sum(a == b for a, b in err) / n
        p_h, p_m = sum(a for a, _ in err) / n, sum(b for _, b in err) / n
        chance = p_h * p_m + (1 - p_h) * (1 - p_m)
        n_added_hand, n_added_matcher, outputs = added[sample, decoder]
        out.append({"sample": sample, "decoder": decoder, "outputs": outputs, "slots": n,
                    "ser_hand": 100.0 * (sum(a for a, _ in err) + n_added_hand) / n,
                    "ser_matcher": 100.0 * (sum(b for _, b in err) + n_added_matcher) / n,
                    "agree_error": 100.0 * agree, "agree_label": 100.0 * sum(h == m for h, m in pairs) / n,
                    "kappa": (agree - chance) / (1 - chance) if chance < 1 else float("nan")})
    return sorted(out, key=lambda r: (r["sample"], r["decoder"] == "all"))


def main(argv: list[str] | None = None) -> None:
    """``hsd-lightning fidelity docs/results/e2e/runs/*``: add repetition, length and E2E slot error columns to
    committed run summaries (``pages`` then shows them)."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("runs", nargs="*", help="run folders (docs/results/<task>/runs/<run>) or folders above them")
    p.add_argument("--data_dir", default=None, help="data root (default: $HSD_DATA_DIR, else the packaged sample)")
    p.add_argument("--hand", default=None, metavar="JSONL",
                   help="instead: the slot matcher's agreement with hand labels, e.g. "
                        "docs/results/e2e/slot_errors_hand.jsonl (a Markdown table)")
    args = p.parse_args(argv)
    if args.hand:
        from .metrics import format_table

        cols = (("sample", "sample"), ("decoder", "decoder"), ("outputs", "outputs"), ("slots", "MR slots"),
                ("ser_hand", "SER % (hand)"), ("ser_matcher", "SER % (matcher)"),
                ("agree_error", "agree: error or not %"), ("agree_label", "agree: ok/missed/wrong %"),
                ("kappa", "kappa (error or not)"))
        print(format_table(hand_agreement(Path(args.hand)), cols))
        return
    if not args.runs:
        p.error("give run folders, or --hand JSONL")
    folders = sorted({s.parent for r in args.runs for s in ([Path(r) / "summary.csv"] if (Path(r) / "summary.csv")
                      .is_file() else Path(r).rglob("summary.csv"))})
    if not folders:
        raise SystemExit(f"no run summary (summary.csv) in {args.runs}: give docs/results/<task>/runs/<run> folders")
    for path in add_to_runs(folders, args.data_dir):
        print(f"wrote {path}")
