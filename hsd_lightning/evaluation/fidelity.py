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
    mr = parse_mr(record.get("input") or record.get("prompt", ""))  # the MR's slots, wherever the prompt holds them
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
