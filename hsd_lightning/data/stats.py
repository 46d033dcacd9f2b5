"""Dataset statistics like the paper's Table 1, for any of the data modules.

    python -m hsd_lightning data-stats [--data_dir DIR] [--datasets e2e xsum ...]

Words = whitespace tokens; sentences = split on . ! ? followed by space/end; % novel n-grams = share of the output's
n-grams (lower-cased words) that do not occur in its input, averaged over pairs.
"""
from __future__ import annotations

import argparse
import re
import warnings

from .datamodule import default_data_dir
from .readers import SPECS, read_pairs

_SENT = re.compile(r"[.!?]+(?:\s+|$)")
_WORD = re.compile(r"\w+")


def _sents(text: str) -> int:
    return max(1, len([s for s in _SENT.split(text.strip()) if s.strip()]))


def _ngrams(words, n):
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def stats(name: str, data_dir: str) -> dict:
    spec = SPECS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sizes = {s: len(read_pairs(spec, data_dir, s)) for s in ("train", "validation", "test")}
        pairs = read_pairs(spec, data_dir, "test")
    n = len(pairs)
    iw = sum(len(s.split()) for s, _ in pairs) / n
    ow = sum(len(t.split()) for _, t in pairs) / n
    isents = sum(_sents(s) for s, _ in pairs) / n
    osents = sum(_sents(t) for _, t in pairs) / n
    novel = {}
    for k in (1, 2):
        vals = []
        for s, t in pairs:
            src, tgt = _ngrams(_WORD.findall(s.lower()), k), _ngrams(_WORD.findall(t.lower()), k)
            if tgt:
                vals.append(len(tgt - src) / len(tgt))
        novel[k] = 100 * sum(vals) / len(vals)
    return {"dataset": name, "pairs": f"{sizes['train']} / {sizes['validation']} / {sizes['test']}",
            "in_sents": isents, "in_words": iw, "out_sents": osents, "out_words": ow,
            "novel_1": novel[1], "novel_2": novel[2]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", default=default_data_dir())
    p.add_argument("--datasets", nargs="+", default=list(SPECS))
    args = p.parse_args(argv)
    print("| Dataset | Train/Eval/Test pairs | In sents | In words | Out sents | Out words | % novel 1-gram | % novel 2-gram |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.datasets:
        r = stats(name, args.data_dir)
        print(f"| {name} | {r['pairs']} | {r['in_sents']:.1f} | {r['in_words']:.1f} | {r['out_sents']:.1f} | "
              f"{r['out_words']:.1f} | {r['novel_1']:.0f} | {r['novel_2']:.0f} |")


if __name__ == "__main__":
    main()
