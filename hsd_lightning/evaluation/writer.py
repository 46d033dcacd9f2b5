"""Callback that writes predictions as batches finish, scores them, and logs the scores (predict and test)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from lightning.pytorch.callbacks import BasePredictionWriter

from .metrics import GenerationScores, format_table

log = logging.getLogger(__name__)


class PredictionScorer(BasePredictionWriter):
    """Writes ``predictions.jsonl`` (appended batch by batch, so a crash keeps what was done) and ``metrics.json``
    into ``output_dir`` (default: the logger's run folder) and logs every score to the loggers, tagged by decoder.

    Args:
        output_dir: where to write; default ``trainer.log_dir``.
        bertscore_model: HF encoder for BERTScore; default the packaged all-MiniLM-L6-v2 (offline).
        bertscore: compute BERTScore at all.
        num_text_examples: predictions logged to TensorBoard as text.
        print_table: print the metrics table at the end of the run.
    """

    def __init__(self, output_dir: str | None = None, bertscore_model: str | None = None, bertscore: bool = True,
                 num_text_examples: int = 5, print_table: bool = True):
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.bertscore_model, self.bertscore = bertscore_model, bertscore
        self.num_text_examples = num_text_examples
        self.print_table = print_table
        self.metrics: dict | None = None

    def _dir(self, trainer) -> Path:
        d = Path(self.output_dir or trainer.log_dir or ".")
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _start(self, trainer, pl_module):
        self.scores = GenerationScores(self.bertscore_model, self.bertscore)
        self.examples: list[dict] = []
        self.path = self._dir(trainer) / ("predictions.jsonl" if trainer.world_size == 1
                                          else f"predictions.rank{trainer.global_rank}.jsonl")
        self.path.write_text("")

    def on_predict_start(self, trainer, pl_module):
        self._start(trainer, pl_module)

    def on_test_start(self, trainer, pl_module):
        self._start(trainer, pl_module)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        with self.path.open("a", encoding="utf-8") as f:
            for rec in prediction:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self.scores.update(prediction)
        self.examples.extend(prediction[: max(0, self.num_text_examples - len(self.examples))])

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.write_on_batch_end(trainer, pl_module, outputs, None, batch, batch_idx, dataloader_idx)

    def _finish(self, trainer, pl_module):
        metrics = self.scores.compute()
        dec = pl_module.decoder
        dm = trainer.datamodule
        self.metrics = {"decoder": dec.describe(), "decoder_name": dec.name, "decoder_settings": dec.settings(),
                        "dataset": getattr(dm, "dataset", None), "model": pl_module.hparams.model_name_or_path,
                        "num_layers": pl_module.model.config.num_hidden_layers,
                        "num_beams": pl_module.hparams.num_beams, "t_max": pl_module.t_max,
                        "training": pl_module.training_kind, "checkpoint": _checkpoint_name(trainer, pl_module),
                        **metrics}
        if trainer.is_global_zero:
            out = self._dir(trainer)
            (out / "metrics.json").write_text(json.dumps(self.metrics, indent=2))
            for logger in trainer.loggers:
                logger.log_metrics({f"{dec.describe()}/{k}": v for k, v in metrics.items()}, step=0)
                exp = getattr(logger, "experiment", None)
                if hasattr(exp, "add_text"):
                    text = "\n\n".join(f"**{e['id']}** {e['prediction']}  \n*ref:* {e['references'][0]}"
                                       for e in self.examples)
                    exp.add_text(f"{dec.describe()}/examples", text, 0)
            if self.print_table:
                print(format_table([self.metrics]))
                print(f"predictions: {self.path}\nmetrics: {out / 'metrics.json'}")

    def on_predict_end(self, trainer, pl_module):
        self._finish(trainer, pl_module)

    def on_test_end(self, trainer, pl_module):
        self._finish(trainer, pl_module)


def _checkpoint_name(trainer, pl_module) -> str | None:
    path = getattr(trainer, "ckpt_path", None) or getattr(pl_module, "checkpoint_path", None)
    return str(path) if path else None
