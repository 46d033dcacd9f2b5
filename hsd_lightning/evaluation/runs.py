"""Committed run summaries: one folder per set of weights decoded, ``docs/results/<task>/runs/<run>/``, holding

* ``summary.csv``: one row per decoder (the report's columns: Avg. Layer, ROUGE, BLEU, BERTScore, % of vanilla,
  agreement, tokens/s, speed-up, the run settings);
* ``predictions.jsonl.gz``: one record per input with every decoder's output:
  ``{"id", "input", "outputs": {"<decoder>": {"prediction", "avg_layers", "passes"}}}``.

``report --save_runs docs/results/<task>`` writes them from sweep folders; ``pages`` turns them into
``docs/results/<task>.md``; ``targets``, ``bootstrap`` and ``depth`` read them. A decoder's records are addressed as
``<run>/predictions.jsonl.gz#<decoder>`` (e.g. ``...#hsd(s=1,min=0,max=10)``).
"""
from __future__ import annotations

import csv
import gzip
import json
import re
from pathlib import Path

SUMMARY = "summary.csv"
PREDICTIONS = "predictions.jsonl.gz"
COLUMNS = ["dataset", "model", "training", "num_beams", "decoder", "avg_layer", "rouge1", "rouge2", "rougeL",
           "pct_rougeL", "bleu1", "bleu4", "bertscore", "pct_bertscore", "ser", "slots_missed", "slots_wrong",
           "slots_added", "slots_total", "repeat3", "repeat1", "mean_words", "length_ratio", "agreement",
           "tokens_per_second", "speedup", "ideal_speedup", "of_ideal", "seconds_per_pass", "pass_speedup",
           "pass_of_ideal", "examples", "empty_predictions", "t_max", "split", "flops_layer", "flops_head", "num_layers",
           "checkpoint"]


def run_name(row: dict) -> str:
    """A plain folder name for the weights a row decoded and its decoding: ``skipaware_3200_decay200_hsd1x2_beam4``
    (the fit run's name without the ``smollm2_<task>_`` prefix), ``zero-shot_beam4``, an adapter's own name; a run
    that records its split ends in it and its input count (``..._beam4_dev200``, ``..._beam4_test400``)."""
    ck = row.get("checkpoint") or ""
    beams = int(float(row["num_beams"]))
    decoding = "greedy" if beams == 1 else f"beam{beams}"
    if not ck:
        name = "zero-shot"
    elif ck.startswith("adapter:"):
        name = ck.split(":", 1)[1].replace("smollm2-e2e-", "adapter-")
    else:  # runs/<name>/version_N/checkpoints/last.ckpt
        name = Path(ck).parent.parent.parent.name or Path(ck).stem
    name = re.sub(r"^smollm2_(e2e|commongen|xsum|cnndm|healthcaremagic)_", "", name)
    split = {"validation": "dev"}.get(row.get("split") or "", row.get("split"))
    if split and row.get("examples"):  # runs that record their split: which split and how many inputs
        decoding += f"_{split}{int(float(row['examples']))}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{name}_{decoding}")


def source_line(prompt: str) -> str:
    """The line of a prompt that holds the input: the second line of a template with an instruction line, the only
    line of a one-line template; a short closing answer cue ("Sentence:", "Summary:") is never it."""
    lines = [line for line in prompt.strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[-1].rstrip().endswith(":") and len(lines[-1]) <= 20:
        lines = lines[:-1]  # the answer cue ("Sentence:", "Summary:")
    return lines[1] if len(lines) > 1 else lines[0]


def write_run(folder: Path, rows: list[dict], records_by_decoder: dict[str, list[dict]]) -> Path:
    """Write one run's ``summary.csv`` and ``predictions.jsonl.gz`` (records as ``predict`` writes them)."""
    from .writer import natural_key

    folder.mkdir(parents=True, exist_ok=True)
    with (folder / SUMMARY).open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    merged: dict[str, dict] = {}
    for decoder, records in records_by_decoder.items():
        for rec in records:
            lpt = rec.get("layers_per_token", [])[1:]
            out = merged.setdefault(rec["id"], {"id": rec["id"], "input": source_line(rec["prompt"]), "outputs": {}})
            out["outputs"][decoder] = {"prediction": rec["prediction"],
                                       "avg_layers": round(sum(lpt) / len(lpt), 2) if lpt else None,
                                       "passes": len(rec.get("layers_per_token", []))}
    if merged:
        with gzip.open(folder / PREDICTIONS, "wt", encoding="utf-8", compresslevel=9) as f:
            for rec in sorted(merged.values(), key=lambda r: natural_key(r["id"])):
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return folder


def _num(x):
    if x in ("", None):
        return None
    try:
        return float(x)
    except ValueError:
        return x


def read_summary(folder: Path) -> list[dict]:
    """The rows of a run's ``summary.csv``, numbers as floats, ``run_dir`` added."""
    path = Path(folder) / SUMMARY if Path(folder).is_dir() else Path(folder)
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        row = {k: (_num(v) if k not in ("dataset", "model", "training", "decoder", "checkpoint", "split") else v)
               for k, v in r.items()}
        row["num_beams"] = int(row["num_beams"]) if row.get("num_beams") is not None else None
        row["run_dir"] = str(path.parent)
        out.append(row)
    return out


def read_predictions(path: Path) -> list[dict]:
    path = Path(path)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def decoder_records(spec: str | Path) -> list[dict] | None:
    """``<run>/predictions.jsonl.gz#<decoder>`` (or ``<run>#<decoder>``) -> that decoder's records
    ``{id, input, prediction, avg_layers, passes}``; None when ``spec`` names no committed run file."""
    text = str(spec)
    if "#" not in text:
        return None
    where, decoder = text.rsplit("#", 1)
    path = Path(where)
    if path.is_dir():
        path = path / PREDICTIONS
    if not path.name.endswith(".jsonl.gz"):
        return None
    if not path.is_file():
        raise ValueError(f"{path}: no such run predictions file (docs/results/<task>/runs/<run>/{PREDICTIONS})")
    records = read_predictions(path)
    have = sorted({d for r in records for d in r["outputs"]})
    if decoder not in have:
        raise ValueError(f"{path} holds no decoder {decoder!r}; it holds {have}")
    return [{"id": r["id"], "input": r["input"], **r["outputs"][decoder]} for r in records if decoder in r["outputs"]]
