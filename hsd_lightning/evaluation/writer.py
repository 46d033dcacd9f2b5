"""Callback that writes predictions as batches finish, scores them, and logs the scores (predict and test).

Multi-device and resumable by design:
- every rank appends its records to ``predictions.rank<R>.jsonl`` batch by batch (a killed run keeps what it wrote);
- when the run ends, rank 0 merges every part file (and any earlier ``predictions.jsonl``) into one
  ``predictions.jsonl``, de-duplicated by id (the padding ``DistributedSampler`` of ``test`` repeats inputs) and in
  input order, and computes ``metrics.json`` over all of them, alone: no torchmetrics collective runs, so uneven
  per-rank counts cannot deadlock and BERTScore is not mixed up between ranks;
- a rerun into the same ``output_dir`` with the same run settings decodes only the ids not written yet.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

from lightning.pytorch.callbacks import BasePredictionWriter

from .metrics import GenerationScores, format_table

log = logging.getLogger(__name__)
STAGES = ("predict", "test")
# settings that make two runs' predictions interchangeable; a rerun into a folder must match them to resume there
RUN_KEYS = ("decoder", "model", "checkpoint", "dataset", "split", "inputs", "num_beams", "max_new_tokens", "t_max",
            "generation_kwargs")


class PredictionScorer(BasePredictionWriter):
    """Writes ``predictions.jsonl`` and ``metrics.json`` into ``output_dir`` (default: the logger's run folder) and
    logs every score to the loggers under the same tags for every decoder (``predict/rougeL``, ``test/bertscore``
    ...): a run folder is one decoder (``predict`` names it so, the sweep writes one per decoder), so TensorBoard
    overlays decoders as runs.

    Args:
        output_dir: where to write; default ``trainer.log_dir``. Rerunning into a folder that holds predictions of
            the same run settings resumes it: finished ids are not decoded again.
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

    # ---- start: on every rank, before the dataloaders are built ----------------------------------------------------
    def setup(self, trainer, pl_module, stage):
        if stage not in STAGES:
            return
        self.stage = str(getattr(stage, "value", stage))  # "predict" | "test" (Lightning passes a str enum)
        # trainer.log_dir broadcasts from rank 0, so every rank must ask for it (not rank 0 alone)
        self.dir = Path(self.output_dir or trainer.log_dir or ".")
        self.part = self.dir / f"predictions.rank{trainer.global_rank}.jsonl"
        if trainer.is_global_zero:
            self.dir.mkdir(parents=True, exist_ok=True)
        trainer.strategy.barrier("hsd-scorer-setup")
        drop_partial_line(self.part)  # a kill mid-write leaves a cut line: records appended now start on a new line
        done = read_records(self.dir)
        exclude = getattr(trainer.datamodule, "exclude_ids", None)
        if done and exclude is None:
            raise ValueError(f"{self.dir} holds {len(done)} predictions but the datamodule "
                             f"{type(trainer.datamodule).__name__} cannot skip finished ids; use another output_dir")
        if exclude is not None:
            exclude(set(done))  # an empty set resets what an earlier run in this process excluded
        if done and trainer.is_global_zero:
            log.warning("%s: resuming, %d predictions already written are kept and not decoded again", self.dir,
                        len(done))
        self.finished = False

    def _check_run(self, trainer, pl_module):
        """After the checkpoint is restored (its decoder counts): the folder's earlier predictions must come from
        the same run settings, else resuming would mix two runs. No collective here: a rank whose share of the
        inputs is empty skips the loop and its start hooks."""
        self.run = run_settings(trainer, pl_module)
        check_same_run(self.dir, self.run)  # every rank reads and raises alike
        if trainer.is_global_zero:
            write_atomic(self.dir / "run.json", json.dumps(self.run, indent=2))

    def on_predict_start(self, trainer, pl_module):
        self._check_run(trainer, pl_module)

    def on_test_start(self, trainer, pl_module):
        self._check_run(trainer, pl_module)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        with self.part.open("a", encoding="utf-8") as f:
            for rec in prediction:
                f.write(json.dumps({**rec, "rank": trainer.global_rank}, ensure_ascii=False) + "\n")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.write_on_batch_end(trainer, pl_module, outputs, None, batch, batch_idx, dataloader_idx)

    # ---- end: teardown runs on every rank, also on a rank that had no batch left (its loop is skipped) -------------
    def teardown(self, trainer, pl_module, stage):
        if stage not in STAGES or self.finished:
            return
        self._check_run(trainer, pl_module)  # again: a run with nothing left to decode skips on_predict_start
        trainer.strategy.barrier("hsd-scorer-merge")  # every rank has written its part file
        metrics = self._merge_and_score(trainer, pl_module) if trainer.is_global_zero else None
        self.metrics = trainer.strategy.broadcast(metrics)
        self.finished = True

    def _merge_and_score(self, trainer, pl_module) -> dict:
        records = read_records(self.dir)
        ordered = sorted(records.values(), key=lambda r: natural_key(r["id"]))
        # atomic: the merged file is complete or absent, and the part files go only once it is in place
        write_atomic(self.dir / "predictions.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ordered))
        for part in self.dir.glob("predictions.rank*.jsonl"):
            part.unlink()
        scores = GenerationScores(self.bertscore_model, self.bertscore, device=pl_module.device)
        scores.update(ordered)
        metrics = scores.compute()
        metrics["tokens_per_second_all_devices"] = all_devices_throughput(ordered)
        metrics["flops_layer"], metrics["flops_head"] = step_cost(trainer.datamodule, pl_module, ordered)
        dec = pl_module.decoder
        self.metrics = {**self.run, "decoder_name": dec.name, "decoder_settings": dec.settings(),
                        "num_layers": pl_module.model.config.num_hidden_layers, "training": pl_module.training_kind,
                        **metrics}
        # agreement with vanilla (added by the sweep) depends on vanilla's outputs and the run settings, which a
        # resumed folder shares: keep it, with the reference it was computed against, instead of dropping it
        old = self.dir / "metrics.json"
        if old.exists():
            self.metrics.update({k: v for k, v in json.loads(old.read_text()).items() if k.startswith("agreement")})
        old.write_text(json.dumps(self.metrics, indent=2))
        for logger in trainer.loggers:
            logger.log_metrics({f"{self.stage}/{k}": v for k, v in metrics.items()}, step=0)
            exp = getattr(logger, "experiment", None)
            if hasattr(exp, "add_text"):
                text = "\n\n".join(f"**{e['id']}** ({dec.describe()}) {e['prediction']}"
                                   + (f"  \n*ref:* {e['references'][0]}" if e["references"] else "")
                                   for e in ordered[: self.num_text_examples])
                exp.add_text(f"{self.stage}/examples", text, 0)
        if self.print_table:
            print(format_table([self.metrics]))
            print(f"predictions: {self.dir / 'predictions.jsonl'}\nmetrics: {self.dir / 'metrics.json'}")
        return self.metrics


def run_settings(trainer, pl_module) -> dict:
    hp = pl_module.hparams
    path = getattr(trainer, "ckpt_path", None) or getattr(pl_module, "checkpoint_path", None)
    dm = trainer.datamodule
    split = getattr(getattr(dm, "hparams", None), "predict_split", None)
    inputs = None
    if split and hasattr(dm, "dataset_for"):  # the whole input set of this run (before a resume leaves some out)
        ids = dm.dataset_for(split, "generate")["id"]
        inputs = f"{len(ids)} inputs, ids sha256 {hashlib.sha256(json.dumps(sorted(ids)).encode()).hexdigest()[:16]}"
    return {"decoder": pl_module.decoder.describe(), "model": hp.model_name_or_path,
            "checkpoint": str(path) if path else None, "dataset": getattr(dm, "dataset", None), "split": split,
            "inputs": inputs,
            "num_beams": hp.num_beams, "max_new_tokens": hp.max_new_tokens, "t_max": pl_module.t_max,
            "generation_kwargs": dict(hp.generation_kwargs or {})}


def step_cost(dm, pl_module, records: list[dict]) -> tuple[float, float]:
    """FLOPs of one layer and of the LM head for one generated token at this run's mean decoding context (prompt +
    half the output), from the model's shapes (``benchmark/flops.py``): a report's FLOP-ideal speed-up of a row is
    ``(L * layer + head) / (avg_layer * layer + head)``."""
    from ..benchmark.flops import step_flops

    split = getattr(getattr(dm, "hparams", None), "predict_split", None)
    prompt = 0.0
    if split and hasattr(dm, "dataset_for"):
        lengths = [len(p) for p in dm.dataset_for(split, "generate")["prompt_ids"]]
        prompt = sum(lengths) / len(lengths) if lengths else 0.0
    new = sum(r["generated_tokens"] for r in records) / max(len(records), 1)
    return step_flops(pl_module.model.config, int(prompt + new / 2))


def drop_partial_line(path: Path) -> None:
    """Cut a file back to its last complete line (its last bytes are a record cut short by a kill, whose input is
    then decoded again); a file that ends with a newline is left as it is."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        data = path.read_bytes()
        f.truncate(data.rfind(b"\n") + 1)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def check_same_run(folder: Path, run: dict) -> None:
    """A folder holds the predictions of one run's settings: resuming another run there would mix them."""
    path = folder / "run.json"
    if path.exists() and any(folder.glob("predictions*.jsonl")):
        old = json.loads(path.read_text())
        diff = [k for k in RUN_KEYS if k in old and old.get(k) != run.get(k)]  # folders written before a key existed
        if diff:
            k = diff[0]
            raise ValueError(f"{folder} holds predictions of another run ({k}: {old.get(k)!r}, now {run.get(k)!r}); "
                             "write to a new output_dir, or delete that folder to start over")


def read_records(folder: Path) -> dict[str, dict]:
    """Every record written into ``folder`` (merged file first, then part files), one per id; a line cut short by a
    kill is dropped (its batch is decoded again)."""
    out: dict[str, dict] = {}
    files = [folder / "predictions.jsonl"] + sorted(folder.glob("predictions.rank*.jsonl"))
    for path in files:
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            out.setdefault(rec["id"], rec)
    return out


def natural_key(example_id: str) -> list:
    """``e2e-test-10`` after ``e2e-test-9``: ids are ordered by their numbers, the inputs' order in the split."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", str(example_id))]


def all_devices_throughput(records: list[dict]) -> float:
    """Generated tokens per second of all devices together: every token over the busiest rank's decoding time."""
    seconds: dict[int, float] = {}
    for r in records:
        seconds[r.get("rank", 0)] = seconds.get(r.get("rank", 0), 0.0) + r["generation_seconds"]
    busiest = max(seconds.values(), default=0.0)
    return sum(r["generated_tokens"] for r in records) / busiest if busiest else float("nan")
