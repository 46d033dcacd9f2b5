"""Readers for the five datasets in their native formats, and the optional hub fallback.

Every reader yields ``(source, target)`` pairs for one split; malformed rows (empty field, bad JSON line, missing
column) are skipped and counted, and the count is reported in one warning per file.
"""
from __future__ import annotations

import csv
import json
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

log = logging.getLogger(__name__)
csv.field_size_limit(1 << 30)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    folder: str
    files: dict[str, str]  # split -> file name
    source: str  # field holding the input
    target: str  # field holding the reference(s)
    fmt: str  # "csv" or "jsonl"
    hub: tuple[str, str | None, dict[str, str]]  # (hub id, config, {split: hub split}) for the fallback
    hub_fields: tuple[str, str]  # (source, target) fields of the hub rows: one reference per row, grouped by source
    source_fn: Callable[[object], str] = str
    multi_target: bool = False  # target field is a list of references (CommonGen)
    hub_source_fn: Callable[[object], str] = str  # hub source field -> source text as the local files write it
    any_targets: bool = False  # the target field may hold one reference (a string) or several (a list)
    optional_target: bool = False  # rows without a reference are kept as inputs to decode (your own data)
    fmt_by_split: dict[str, str] | None = None  # per-split format where files differ (your own data)


def _concepts(cs: object) -> str:
    # "field_N#look_V#stand_V" -> "field, look, stand"
    return ", ".join(c.rsplit("_", 1)[0] for c in str(cs).split("#") if c)


def _concept_list(cs: object) -> str:
    # the hub's ["field", "look", "stand"] -> "field, look, stand"
    return ", ".join(str(c) for c in cs)


SPECS: dict[str, DatasetSpec] = {
    "e2e": DatasetSpec("e2e", "e2e", {"train": "trainset.csv", "validation": "devset.csv", "test": "testset_w_refs.csv"},
                       "mr", "ref", "csv", ("e2e_nlg", None, {}), ("meaning_representation", "human_reference")),
    "commongen": DatasetSpec("commongen", "commongen", {"train": "commongen.train.jsonl",
                                                        "validation": "commongen.dev.jsonl",
                                                        "test": "commongen.test.jsonl"},
                             "concept_set", "scene", "jsonl", ("allenai/common_gen", None, {"test": "validation"}),
                             ("concepts", "target"), _concepts, True, _concept_list),
    "cnn_dailymail": DatasetSpec("cnn_dailymail", "cnn_dailymail", {"train": "train.csv", "validation": "validation.csv",
                                                                    "test": "test.csv"},
                                 "article", "highlights", "csv", ("cnn_dailymail", "3.0.0", {}), ("article", "highlights")),
    "xsum": DatasetSpec("xsum", "xsum", {"train": "train.jsonl", "validation": "validation.jsonl", "test": "test.jsonl"},
                        "document", "summary", "jsonl", ("EdinburghNLP/xsum", None, {}), ("document", "summary")),
    # the local HealthCareMagic subset has no test split: its README says to test on val.jsonl, eval_set is extra
    "healthcaremagic": DatasetSpec("healthcaremagic", "healthcaremagic",
                                   {"train": "train.jsonl", "validation": "eval_set.jsonl", "test": "val.jsonl"},
                                   "instruction", "response", "jsonl",
                                   # the hub set has one split: its last 2 % become validation and test
                                   ("lavita/ChatDoctor-HealthCareMagic-100k", None,
                                    {"train": "train[:98%]", "validation": "train[98%:99%]", "test": "train[99%:]"}),
                                   ("input", "output")),
}

WHERE_TO_GET = ("the hsd-lightning data folder (see its README), or pass data.allow_hub=true where the network is "
                "there to load the same task from the Hugging Face hub")


CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # control characters other than tab/newline/CR


def _rows(path: Path, fmt: str) -> Iterator[dict | None]:
    with path.open(encoding="utf-8", newline="") as f:
        if fmt == "csv":
            yield from csv.DictReader(f)
        else:
            for line in f:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    yield None
                    continue
                yield row if isinstance(row, dict) else None


def _not_utf8(path: Path, err: UnicodeDecodeError) -> ValueError:
    raw = path.read_bytes()
    line = raw[: err.start].count(b"\n") + 1
    bad = raw[err.start: err.start + 1].hex()
    return ValueError(f"{path}: line {line} is not valid UTF-8 (byte 0x{bad}); re-save the file as UTF-8 "
                      "(e.g. iconv -f latin1 -t utf-8)")


def _clean(text: str) -> tuple[str, bool]:
    cleaned = CONTROL.sub(" ", text)
    return cleaned, cleaned != text


def read_pairs(spec: DatasetSpec, data_dir: str | Path, split: str) -> list[tuple[str, str]]:
    """(source, target) pairs of one split from the local files. Rows that cannot be used are skipped and reported
    in one warning per file, by reason with their row numbers; control characters are replaced by spaces."""
    path = Path(data_dir).expanduser() / spec.folder / spec.files[split]
    if not path.exists():
        where = "check the path, or give the split's file (data.init_args.<split>_file)" if spec.optional_target \
            else f"get it from {WHERE_TO_GET}"
        raise FileNotFoundError(f"{spec.name}: {path} not found; {where}")
    pairs: list[tuple[str, str]] = []
    skipped: dict[str, list[int]] = {}
    controls: list[int] = []
    try:
        fmt = (spec.fmt_by_split or {}).get(split, spec.fmt)
        for n, row in enumerate(_rows(path, fmt), start=1):
            if row is None:
                skipped.setdefault("not a JSON object", []).append(n)
                continue
            if spec.source not in row or (spec.target not in row and not spec.optional_target):
                skipped.setdefault(f"no {spec.source!r} or {spec.target!r} field", []).append(n)
                continue
            src = spec.source_fn(row[spec.source]).strip() if row[spec.source] is not None else ""
            value = row.get(spec.target)
            targets = value if spec.multi_target or (spec.any_targets and isinstance(value, list)) else [value]
            if not isinstance(targets, list):
                skipped.setdefault(f"{spec.target!r} is not a list", []).append(n)
                continue
            good = [str(t).strip() for t in targets if t is not None and str(t).strip()]
            if not src:
                skipped.setdefault("an empty source", []).append(n)
                continue
            if not good and spec.optional_target:  # an input to decode without a reference
                good = [""]
            elif not good:
                skipped.setdefault("an empty reference", []).append(n)
                continue
            src, c1 = _clean(src)
            cleaned = [_clean(t) for t in good]
            if c1 or any(c for _, c in cleaned):
                controls.append(n)
            pairs.extend((src, t) for t, _ in cleaned)
    except UnicodeDecodeError as err:
        raise _not_utf8(path, err) from None
    if skipped:
        total = sum(len(v) for v in skipped.values())
        why = "; ".join(f"{len(v)} with {k} (row{'s' if len(v) > 1 else ''} {', '.join(map(str, v[:5]))}"
                        f"{', ...' if len(v) > 5 else ''})" for k, v in skipped.items())
        warnings.warn(f"{spec.name}/{path.name}: skipped {total} malformed rows: {why}; fix or remove them in the file",
                      stacklevel=2)
    if controls:
        warnings.warn(f"{spec.name}/{path.name}: replaced control characters by spaces in {len(controls)} rows "
                      f"(first: row {controls[0]})", stacklevel=2)
    return pairs


def read_hub_pairs(spec: DatasetSpec, split: str) -> list[tuple[str, str]]:
    """The same task from the public hub (needs the network)."""
    import datasets

    hub_id, config, split_map = spec.hub
    hub_split = split_map.get(split, split)
    ds = datasets.load_dataset(hub_id, config, split=hub_split)
    src_f, tgt_f = spec.hub_fields
    pairs = []
    for row in ds:
        s, t = row.get(src_f), row.get(tgt_f)
        if s and t and str(t).strip():
            pairs.append((spec.hub_source_fn(s).strip(), str(t).strip()))
    if not pairs:
        raise ValueError(f"{spec.name}: hub set {hub_id} split {hub_split!r} has no rows with fields {src_f!r} and "
                         f"{tgt_f!r}; use the local data folder ({WHERE_TO_GET})")
    return pairs


def group_by_source(pairs: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """One entry per distinct source (in first-seen order) with all its references (none for an input given
    without one: an empty target)."""
    groups: dict[str, list[str]] = {}
    for s, t in pairs:
        refs = groups.setdefault(s, [])
        if t:
            refs.append(t)
    return list(groups.items())
