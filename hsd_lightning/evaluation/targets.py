"""The skip-aware fine-tuning targets, checked on every table the reports hold (one Markdown file).

    python -m hsd_lightning targets docs/results/*/runs/* --out docs/results/targets.md

Three checks, each per group of rows decoded from one set of weights at one beam width (as the reports group them):
* quality kept at depth: HSD s=1 (E_max 10 of 30 layers) keeps >= 95 % of its own vanilla R-L *and* BERTScore at
  <= 0.62 L average layers; HSD s=2 (E_max 10) >= 90 % at <= 0.50 L (the issue's E2E targets, shown for every task);
* HSD beats SkipDecode at equal or lower depth: for each SkipDecode row, some HSD row with no more average layers
  must score higher on R-L and on BERTScore (rows with always-run layers are left out of both sides: they change
  the plan);
* skip-aware fine-tuning costs vanilla decoding <= 3 % of the standard fine-tune's vanilla R-L (same task, beam)
  and, where both runs have the E2E slot error rate, <= 1 point of SER;
* fidelity (issue 34), where a run has the fidelity columns (``hsd-lightning fidelity``): the HSD rows at their
  depth keep >= 97 % of vanilla's R-L and BERTScore, have an E2E slot error rate <= 1.25x vanilla's, at most 2
  points more outputs with a repeated trigram than vanilla, and a mean length within 5 % of vanilla's.
"""
from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

from .bootstrap import by_unique_input, input_line
from .report import group_title
from .runs import PREDICTIONS, decoder_records, read_summary

# (decoder, share of vanilla R-L and BERTScore to keep, most average layers as a share of L)
DEPTH_TARGETS = [("hsd(s=1,min=0,max=10)", 95.0, 0.62), ("hsd(s=2,min=0,max=10)", 90.0, 0.50)]
VANILLA_COST = 3.0  # % of the standard fine-tune's vanilla R-L that skip-aware training may cost
VANILLA_SER_POINTS = 1.0  # points of E2E slot error rate it may add to the standard fine-tune's vanilla (issue 34)
# issue 34: the HSD rows against their own vanilla (same inputs): quality kept, SER ratio, extra repeats, length
FIDELITY = {"keep": 97.0, "ser_ratio": 1.25, "repeat3_points": 2.0, "length": 0.05}


def _num(x: str) -> float | None:
    return float(x) if x not in ("", None) else None


def load_groups(paths: list[str]) -> dict[str, list[dict]]:
    """Rows of committed runs (``docs/results/<task>/runs/<run>`` folders or their ``summary.csv``), by group."""
    groups: dict[str, list[dict]] = {}
    for path in paths:
        for r in read_summary(Path(path)):
            groups.setdefault(group_title(r), []).append(r)
    # a run decoded on inputs without references (e.g. sampled E2E MRs) has no R-L to keep: no target applies to it
    return {t: rows for t, rows in groups.items() if any(_given(r.get("pct_rougeL")) for r in rows)}


def _family(decoder: str) -> str:
    return re.match(r"[a-z]+", decoder).group(0)


def _vanilla(rows: list[dict]) -> dict | None:
    return next((r for r in rows if r["decoder"] == "vanilla"), None)


def depth_checks(groups: dict[str, list[dict]]) -> list[dict]:
    out = []
    for title, rows in groups.items():
        base = _vanilla(rows)
        if base is None:
            continue
        for name, keep, depth in DEPTH_TARGETS:
            r = next((r for r in rows if r["decoder"] == name), None)
            if r is None:
                continue
            share = r["avg_layer"] / base["avg_layer"]
            met = r["pct_rougeL"] >= keep and r["pct_bertscore"] >= keep and share <= depth
            out.append({"group": title, "decoder": name, "target": f">= {keep:g} % at <= {depth:.2f} L",
                        "depth": share, "pct_rougeL": r["pct_rougeL"], "pct_bertscore": r["pct_bertscore"],
                        "met": met})
    return out


def hsd_vs_skipdecode(groups: dict[str, list[dict]]) -> list[dict]:
    out = []
    for title, rows in groups.items():
        plain = [r for r in rows if "always" not in r["decoder"] and r["pct_rougeL"] is not None]
        hsd = [r for r in plain if _family(r["decoder"]) == "hsd"]
        for sd in (r for r in plain if _family(r["decoder"]) == "skipdecode"):
            rivals = [h for h in hsd if h["avg_layer"] <= sd["avg_layer"]]
            winners = [h for h in rivals if h["pct_rougeL"] > sd["pct_rougeL"] and h["pct_bertscore"] > sd["pct_bertscore"]]
            # shown: the best winner on R-L, else (not met) the best rival on R-L
            best = max(winners or rivals, key=lambda h: h["pct_rougeL"], default=None)
            out.append({"group": title, "skipdecode": sd["decoder"], "sd_layers": sd["avg_layer"],
                        "sd_rougeL": sd["pct_rougeL"], "sd_bertscore": sd["pct_bertscore"],
                        "hsd": best and best["decoder"], "hsd_layers": best and best["avg_layer"],
                        "hsd_rougeL": best and best["pct_rougeL"], "hsd_bertscore": best and best["pct_bertscore"],
                        "met": bool(winners)})
    return out


def vanilla_cost(groups: dict[str, list[dict]]) -> list[dict]:
    out = []
    for title, rows in groups.items():
        base = _vanilla(rows)
        if base is None or base["training"] != "skip-aware FT":
            continue
        standard = [(t, _vanilla(g)) for t, g in groups.items()
                    if g[0]["training"] == "FT" and g[0]["dataset"] == base["dataset"]
                    and g[0]["model"] == base["model"] and g[0]["num_beams"] == base["num_beams"] and _vanilla(g)]
        for ft_title, ft in standard:
            cost = 100.0 * (1 - base["rougeL"] / ft["rougeL"])
            ser_added = base["ser"] - ft["ser"] if _given(base.get("ser")) and _given(ft.get("ser")) else None
            ok = cost <= VANILLA_COST and (ser_added is None or ser_added <= VANILLA_SER_POINTS)
            mine, theirs = _inputs(base, title), _inputs(ft, ft_title)
            differ = mine is not None and theirs is not None and sorted(map(input_line, mine)) != sorted(map(input_line, theirs))
            shared = len(set(by_unique_input(mine)) & set(by_unique_input(theirs))) if differ else 0
            out.append({"group": title, "ft_group": _weights(ft_title), "ft_rougeL": ft["rougeL"],
                        "rougeL": base["rougeL"], "cost": cost, "ft_ser": ft.get("ser"), "ser": base.get("ser"),
                        "ser_added": ser_added, "met": None if differ else ok,
                        "shared_inputs": f"{shared} of {len(mine)}" if differ else None})
    return out


def fidelity_checks(groups: dict[str, list[dict]]) -> list[dict]:
    out = []
    for title, rows in groups.items():
        base = _vanilla(rows)
        if base is None or base.get("repeat3") is None:
            continue
        for name, _, depth in DEPTH_TARGETS:
            r = next((r for r in rows if r["decoder"] == name), None)
            if r is None or r.get("repeat3") is None:
                continue
            share = r["avg_layer"] / base["avg_layer"]
            ser_ratio = r["ser"] / base["ser"] if _given(base.get("ser")) and _given(r.get("ser")) else None
            length = r["mean_words"] / base["mean_words"] if base.get("mean_words") else None
            checks = [share <= depth, r["pct_rougeL"] >= FIDELITY["keep"], r["pct_bertscore"] >= FIDELITY["keep"],
                      r["repeat3"] <= base["repeat3"] + FIDELITY["repeat3_points"],
                      length is not None and abs(length - 1) <= FIDELITY["length"]]
            if ser_ratio is not None:  # E2E only
                checks.append(ser_ratio <= FIDELITY["ser_ratio"])
            out.append({"group": title, "decoder": name, "depth": share, "pct_rougeL": r["pct_rougeL"],
                        "pct_bertscore": r["pct_bertscore"], "ser": r.get("ser"), "vanilla_ser": base.get("ser"),
                        "ser_ratio": ser_ratio, "repeat3": r["repeat3"], "vanilla_repeat3": base["repeat3"],
                        "length": length, "met": all(checks)})
    return out


def _inputs(row: dict, title: str) -> list[dict] | None:
    """The records of a group's vanilla row, from the predictions its report copied (None if not there). Two
    configs may draw different test subsets of one split (``shuffle_subset``): their means are not comparable; the
    inputs they share are counted as the bootstrap pairs them (by input line, lines repeated in a run left out)."""
    path = Path(row["run_dir"]) / PREDICTIONS
    if not path.is_file():
        return None
    return decoder_records(f"{path}#vanilla")


def _verdict(cost: dict) -> str:
    if cost["met"] is None:
        return (f"not comparable: other test inputs ({cost['shared_inputs']} shared; "
                "`hsd-lightning bootstrap --shared` compares on those)")
    return "**met**" if cost["met"] else "not met"


def _weights(title: str) -> str:
    """The weights part of a group title: "FT (smollm2_xsum_lora/last.ckpt)" of "xsum / model / FT (...) / beam 4"."""
    return title.split(" / ")[2]


def _given(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def _f(x, fmt="{:.1f}") -> str:
    return fmt.format(x) if _given(x) else "–"


def markdown(groups: dict[str, list[dict]]) -> str:
    yes = {True: "**met**", False: "not met"}
    md = ["## Quality kept at depth (HSD E_max 10)\n",
          "| weights | decoder | target | layers / L | % vanilla R-L | % vanilla BERTScore | |",
          "|---|---|---|---|---|---|---|"]
    md += [f"| {c['group']} | {c['decoder']} | {c['target']} | {c['depth']:.2f} | {_f(c['pct_rougeL'])} | "
           f"{_f(c['pct_bertscore'])} | {yes[c['met']]} |" for c in depth_checks(groups)]
    md += ["", "## HSD against SkipDecode at equal or lower depth (R-L and BERTScore, % of vanilla)\n",
           "| weights | SkipDecode | layers | R-L % | BERTScore % | HSD at <= its layers (best winner, else best R-L) | "
           "layers | R-L % | BERTScore % | |", "|---|---|---|---|---|---|---|---|---|---|"]
    md += [f"| {c['group']} | {c['skipdecode']} | {c['sd_layers']:.2f} | {_f(c['sd_rougeL'])} | "
           f"{_f(c['sd_bertscore'])} | {c['hsd'] or 'none'} | {_f(c['hsd_layers'], '{:.2f}')} | "
           f"{_f(c['hsd_rougeL'])} | {_f(c['hsd_bertscore'])} | {yes[c['met']]} |" for c in hsd_vs_skipdecode(groups)]
    md += ["", f"## What skip-aware fine-tuning costs vanilla decoding (target: <= {VANILLA_COST:g} % R-L, "
               f"<= {VANILLA_SER_POINTS:g} point SER where measured)\n",
           "| skip-aware weights | standard FT | its vanilla R-L | skip-aware vanilla R-L | cost % | its vanilla SER % | "
           "skip-aware vanilla SER % | SER added | |", "|---|---|---|---|---|---|---|---|---|"]
    md += [f"| {c['group']} | {c['ft_group']} | {c['ft_rougeL']:.2f} | {c['rougeL']:.2f} | {c['cost']:.1f} | "
           f"{_f(c['ft_ser'])} | {_f(c['ser'])} | {_f(c['ser_added'], '{:+.1f}')} | {_verdict(c)} |"
           for c in vanilla_cost(groups)]
    f = FIDELITY
    md += ["", f"## Fidelity: what a reader notices (targets: >= {f['keep']:g} % R-L and BERTScore, SER <= "
               f"{f['ser_ratio']:g}x vanilla, repeated-trigram outputs <= vanilla + {f['repeat3_points']:g} points, "
               f"length within {100 * f['length']:g} %, at the depth above)\n",
           "| weights | decoder | layers / L | % R-L | % BERTScore | SER % (vanilla) | SER / vanilla | repeat-3 % "
           "(vanilla) | length / vanilla | |", "|---|---|---|---|---|---|---|---|---|---|"]
    md += [f"| {c['group']} | {c['decoder']} | {c['depth']:.2f} | {_f(c['pct_rougeL'])} | {_f(c['pct_bertscore'])} | "
           f"{_f(c['ser'])} ({_f(c['vanilla_ser'])}) | {_f(c['ser_ratio'], '{:.2f}')} | {_f(c['repeat3'])} "
           f"({_f(c['vanilla_repeat3'])}) | {_f(c['length'], '{:.2f}')} | {yes[c['met']]} |"
           for c in fidelity_checks(groups)]
    return "\n".join(md) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reports", nargs="+", help="committed run folders (docs/results/<task>/runs/<run>) or their summary.csv")
    p.add_argument("--out", default=None, help="write the Markdown here (default: print only)")
    args = p.parse_args(argv)
    missing = [r for r in args.reports if not (Path(r) / "summary.csv").is_file() and not Path(r).is_file()]
    if missing:
        raise SystemExit(f"no run summary at {missing[0]}; write one with python -m hsd_lightning report --save_runs")
    text = markdown(load_groups(args.reports))
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
