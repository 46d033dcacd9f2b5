"""The E2E dev-split selection rule of issue 34, over every committed dev table: for each candidate, the mean over
its plain HSD rows (no always-run layer, no decoding guard) of SER % + repeat-3 % (lower is better), with
vanilla's SER and R-L beside it.

    python scripts/experiments/e2e_dev_scores.py [docs/results/e2e/runs/*_dev200 ...]

With the equal-budget standard fine-tune's dev table among them (``lora_3808_beam4_dev200``), also prints each
candidate's vanilla cost against it (R-L %, SER points), the third target's two numbers.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path


def rows(folder: Path) -> dict[str, dict[str, float]]:
    with (folder / "summary.csv").open(newline="") as f:
        return {r["decoder"]: {k: float(r[k]) for k in ("rougeL", "ser", "repeat3")}
                for r in csv.DictReader(f)}


def main(argv: list[str]) -> None:
    folders = [Path(a) for a in argv] or sorted(Path("docs/results/e2e/runs").glob("*_dev200"))
    tables = {f.name: rows(f) for f in folders}
    std = next((t["vanilla"] for n, t in tables.items() if n.startswith("lora_3808")), None)
    print("| candidate | score | HSD s=1 SER / rep3 | HSD s=2 SER / rep3 | vanilla R-L | vanilla SER |"
          + (" R-L cost % | SER points |" if std else ""))
    print("|---|---|---|---|---|---|" + ("---|---|" if std else ""))
    out = []
    for name, t in tables.items():
        # the plain HSD rows only: not `always_run` variants, nor decoding guards (" + no_repeat_ngram_size=3", rows
        # a table may hold beside them, never the fix the rule chooses)
        hsd = [r for d, r in t.items() if d.startswith("hsd(") and "always" not in d and " + " not in d]
        if not hsd:
            continue
        score = sum(r["ser"] + r["repeat3"] for r in hsd) / len(hsd)
        v = t["vanilla"]
        cells = [name, f"{score:.1f}", *(f"{r['ser']:.1f} / {r['repeat3']:.1f}" for r in hsd[:2]),
                 f"{v['rougeL']:.2f}", f"{v['ser']:.1f}"]
        if std:
            cells += [f"{100 * (1 - v['rougeL'] / std['rougeL']):.1f}", f"{v['ser'] - std['ser']:+.1f}"]
        out.append((score, "| " + " | ".join(cells) + " |"))
    for _, line in sorted(out):
        print(line)


if __name__ == "__main__":
    main(sys.argv[1:])
