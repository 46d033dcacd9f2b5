"""LightningDataModules for the paper's five tasks, sharing one base class.

Training batches: prompt + target + EOS, right-padded, labels = -100 on prompt and padding.
Generation batches (validation-generation, test, predict): prompts left-padded with an attention mask, carrying the
example id, the prompt text and all references of that input (multi-reference tasks are grouped by input).
"""
from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path

import datasets
import lightning as L
import torch
from torch.utils.data import DataLoader, DistributedSampler
from torchdata.stateful_dataloader import StatefulDataLoader

from ..models.loading import load_tokenizer
from .readers import SPECS, WHERE_TO_GET, DatasetSpec, group_by_source, read_hub_pairs, read_pairs

log = logging.getLogger(__name__)
_MIN_PREFIX = 16  # shortest prompt of a source-continuation row (tokens)
DEFAULT_DATA_DIR = "data"  # used when neither data_dir nor $HSD_DATA_DIR is given
# small licensed samples shipped in the package (E2E test: 50 MRs), used when the data root lacks the dataset
SAMPLES_DIR = Path(__file__).resolve().parent / "samples"


def default_data_dir() -> str:
    return os.environ.get("HSD_DATA_DIR", DEFAULT_DATA_DIR)


def check_template(template: str) -> None:
    """A prompt template holds ``{source}`` exactly once and no other field (``{{`` / ``}}`` are literal braces);
    checked when the data module is built, so fit and predict refuse it before any work."""
    import string

    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:
        raise ValueError(f"prompt_template {template!r} is not a valid template ({err}); write literal braces as "
                         "{{ and }}") from None
    other = sorted({f for f in fields if f != "source"})
    if other:
        raise ValueError(f"prompt_template {template!r} has the field(s) {other}; only {{source}} is filled in (write "
                         "literal braces as {{ and }})")
    if "source" not in fields:
        raise ValueError(f"prompt_template {template!r} has no '{{source}}' placeholder; add one")
    if fields.count("source") != 1:
        raise ValueError(f"prompt_template {template!r} has {fields.count('source')} '{{source}}' placeholders; "
                         "use exactly one")


def _template_parts(template: str) -> tuple[str, str]:
    """The text before and after ``{source}``, literal braces (``{{`` / ``}}``) unescaped as ``str.format`` does."""
    prefix, suffix = template.split("{source}", 1)
    unescape = lambda s: s.replace("{{", "{").replace("}}", "}")  # noqa: E731
    return unescape(prefix), unescape(suffix)


def _unquote(template: str | None) -> str | None:
    """A template given on the command line arrives JSON-quoted (``cli._quote_templates``: jsonargparse would read
    ``Q: {source}`` as a YAML mapping), and jsonargparse keeps a quoted string as typed: unwrap it here."""
    if isinstance(template, str) and len(template) > 1 and template[0] == template[-1] == '"':
        try:
            value = json.loads(template)
        except json.JSONDecodeError:
            return template
        return value if isinstance(value, str) else template
    return template


class TextGenDataModule(L.LightningDataModule):
    """Base class. Subclasses set ``dataset`` (a key of ``readers.SPECS``) and the prompt template; the generation
    length is the model's ``max_new_tokens``.

    Args:
        tokenizer: model name or path whose tokenizer to use (linked from ``model.model_name_or_path`` by the CLI).
        data_dir: folder holding one sub-folder per dataset; default ``$HSD_DATA_DIR``, then ``./data``.
        prompt_template: must contain ``{source}``; the target follows it after a space and ends with EOS.
        max_source_tokens: sources longer than this are truncated (the source only, never template or target).
        max_train_samples / max_eval_samples: first N (or seeded random N if ``shuffle_subset``) training pairs /
            evaluation inputs, for CPU budgets. Two configs that differ in ``shuffle_subset`` decode different test
            inputs; an example's id (``<dataset>-<split>-<k>``: the k-th distinct input of the whole split) names
            the same input under any subset, so runs compare by id or by input (``evaluation.bootstrap``).
        predict_split: split used by ``predict`` and ``test`` (``test`` by default).
        allow_hub: if the local files are missing, load the task from the hub with ``datasets.load_dataset``.
        source_continuations: extra training rows per distinct training source (default 0: off), for skip-aware
            fine-tuning on small data. Each row continues the source text itself: the prompt is the source's first
            k tokens (no template), the target its next ``continuation_tokens`` tokens (no EOS: the text goes on),
            k drawn per row with ``seed`` from [16, min(source tokens, max_source_tokens) - continuation_tokens].
            A row is a real decoding situation (a prompt, then generated tokens under the plan of their step), so a
            skip plan trained on it learns what it will run; it gives a plan ~``continuation_tokens`` target tokens
            per row where a summary gives ~25. Sources too short for one window are left out (logged). Measured on XSum
            (README): at equal compute it did worse than more epochs of the task rows.
        continuation_tokens: target length of a source-continuation row.
    """

    dataset: str = ""
    default_template: str = "{source}"

    def __init__(self, tokenizer: str = "tiny-gpt2", data_dir: str | None = None, prompt_template: str | None = None,
                 max_source_tokens: int = 512, batch_size: int = 8, eval_batch_size: int = 8, num_workers: int = 0,
                 max_train_samples: int | None = None, max_eval_samples: int | None = None,
                 shuffle_subset: bool = False, seed: int = 42, predict_split: str = "test", allow_hub: bool = False,
                 source_continuations: int = 0, continuation_tokens: int = 64):
        super().__init__()
        self.save_hyperparameters()
        template = _unquote(prompt_template) or self.default_template
        check_template(template)
        for key, value in (("max_train_samples", max_train_samples), ("max_eval_samples", max_eval_samples)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{key}={value!r}: give a number of examples >= 1, or null for the whole split")
        for key, value in (("max_source_tokens", max_source_tokens), ("batch_size", batch_size),
                           ("eval_batch_size", eval_batch_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key}={value!r} must be an integer >= 1")
        if predict_split not in ("train", "validation", "test"):
            raise ValueError(f"predict_split={predict_split!r}; use 'train', 'validation' or 'test'")
        if not isinstance(source_continuations, int) or source_continuations < 0:
            raise ValueError(f"source_continuations={source_continuations!r} must be an integer >= 0 (0 = off)")
        if source_continuations and not 1 <= continuation_tokens <= max_source_tokens - _MIN_PREFIX:
            raise ValueError(f"continuation_tokens={continuation_tokens!r} must lie in [1, max_source_tokens - "
                             f"{_MIN_PREFIX}] = [1, {max_source_tokens - _MIN_PREFIX}] (a continuation row is no longer "
                             "than a source); lower it or raise data.init_args.max_source_tokens")
        self.template = template
        self.data_dir = data_dir or default_data_dir()
        if type(self) is TextGenDataModule:
            raise ValueError("TextGenDataModule is the base class of the task modules; for your own files use "
                             "--data hsd_lightning.data.TextPairDataModule (README: 'Your own data'), for a paper "
                             f"task one of {', '.join(c.__name__ for c in DATAMODULES.values())}")
        self.spec = self._spec()
        self._tok = None
        self._cache: dict[str, datasets.Dataset] = {}
        self.source_used: str | None = None  # "local <path>" or "hub <id>"
        self.num_truncated: dict[str, int] = {}
        self.skip_ids: set[str] = set()  # ids already decoded (a resumed predict/test), see exclude_ids
        # a rank may get no input to decode (fewer inputs than ranks, a resume with few left): Lightning's own flag
        # lets that rank skip its loop (ShardSampler below gives it the empty share)
        self.allow_zero_length_dataloader_with_multiple_devices = True

    def _spec(self) -> DatasetSpec:
        return SPECS[self.dataset]

    # ---- tokenizer & raw data --------------------------------------------------------------------------------
    @property
    def tokenizer(self):
        if self._tok is None:
            self._tok = load_tokenizer(self.hparams.tokenizer)
        return self._tok

    def pairs(self, split: str) -> list[tuple[str, str]]:
        local = Path(self.data_dir).expanduser() / self.spec.folder
        sample = SAMPLES_DIR / self.spec.folder / self.spec.files[split]
        if not local.exists() and not self.hparams.allow_hub and sample.exists():
            log.warning("%s: data folder %s not found; using the packaged sample %s (set data.data_dir or "
                        "$HSD_DATA_DIR for the full split)", self.dataset, local, sample)
            self.source_used = f"sample {sample}"
            return read_pairs(self.spec, SAMPLES_DIR, split)
        if local.exists() or not self.hparams.allow_hub:
            if not local.exists():
                raise FileNotFoundError(f"{self.dataset}: data folder {local} not found; set data.data_dir "
                                        f"(or $HSD_DATA_DIR) to {WHERE_TO_GET}")
            self.source_used = f"local {local}"
            return read_pairs(self.spec, self.data_dir, split)
        self.source_used = f"hub {self.spec.hub[0]}"
        log.warning("%s: %s missing, loading %s from the hub", self.dataset, local, self.spec.hub[0])
        return read_hub_pairs(self.spec, split)

    def _subset(self, items: list, n: int | None) -> list:
        if n is None or n >= len(items):
            return items
        if self.hparams.shuffle_subset:
            return random.Random(self.hparams.seed).sample(items, n)
        return items[:n]

    def _nonempty(self, items: list, split: str) -> list:
        if not items:
            raise ValueError(f"{self.dataset}: split {split!r} is empty after filtering; check the files in "
                             f"{self.data_dir} and max_*_samples")
        return items

    # ---- tokenization (once, with datasets.map) ----------------------------------------------------------------
    def _prompt_ids(self, sources: list[str], split: str) -> list[list[int]]:
        tok = self.tokenizer
        prefix, suffix = _template_parts(self.template)
        pre = tok(prefix, add_special_tokens=False)["input_ids"] if prefix else []
        suf = tok(suffix, add_special_tokens=False)["input_ids"] if suffix else []
        src = tok(sources, add_special_tokens=False)["input_ids"]
        m = self.hparams.max_source_tokens
        self.num_truncated[split] = self.num_truncated.get(split, 0) + sum(len(s) > m for s in src)
        return [pre + s[:m] + suf for s in src]

    def max_prompt_tokens(self) -> int:
        """The longest prompt a batch can hold: the template's tokens plus ``max_source_tokens``."""
        prefix, suffix = _template_parts(self.template)
        tok = self.tokenizer
        return sum(len(tok(x, add_special_tokens=False)["input_ids"]) for x in (prefix, suffix) if x) \
            + self.hparams.max_source_tokens

    def _train_features(self, batch: dict, split: str) -> dict:
        tok = self.tokenizer
        prompts = self._prompt_ids(batch["source"], split)
        targets = tok([" " + t for t in batch["target"]], add_special_tokens=False)["input_ids"]
        ids = [p + t + [tok.eos_token_id] for p, t in zip(prompts, targets)]
        labels = [[-100] * len(p) + t + [tok.eos_token_id] for p, t in zip(prompts, targets)]
        return {"input_ids": ids, "labels": labels}

    def _continuation_features(self, sources: list[str]) -> dict:
        """``source_continuations`` rows per source: its first k tokens as prompt, the next ``continuation_tokens``
        as target (see the class docstring). Seeded per source, so the rows do not depend on the subset's order."""
        n, c, m = self.hparams.source_continuations, self.hparams.continuation_tokens, self.hparams.max_source_tokens
        ids, labels, short = [], [], 0
        for src, toks in zip(sources, self.tokenizer(sources, add_special_tokens=False)["input_ids"]):
            hi = min(len(toks), m) - c  # the largest prompt that leaves a whole continuation within max_source_tokens
            if hi < _MIN_PREFIX:
                short += 1
                continue
            rng = random.Random(f"{self.hparams.seed}/{src}")
            for k in (rng.randint(_MIN_PREFIX, hi) for _ in range(n)):
                ids.append(toks[:k + c])
                labels.append([-100] * k + toks[k:k + c])
        if short:
            log.warning("%s: %d of %d training sources are shorter than %d tokens; no continuation rows from them",
                        self.dataset, short, len(sources), _MIN_PREFIX + c)
        if not ids:
            raise ValueError(f"{self.dataset}: no training source has {_MIN_PREFIX + c} tokens, so "
                             f"source_continuations={n} adds nothing; lower data.init_args.continuation_tokens or "
                             "set source_continuations 0 (it is meant for long sources: articles, questions)")
        return {"input_ids": ids, "labels": labels}

    def _gen_features(self, batch: dict, split: str) -> dict:
        return {"prompt_ids": self._prompt_ids(batch["source"], split)}

    def dataset_for(self, split: str, kind: str) -> datasets.Dataset:
        key = f"{split}/{kind}"
        if key in self._cache:
            return self._cache[key]
        pairs = self.pairs(split)
        if kind == "train":
            pairs = [p for p in pairs if p[1]]  # inputs given without a reference train nothing
            if split == "train":
                pairs = self._subset(pairs, self.hparams.max_train_samples)
            else:  # validation loss on the pairs of the first max_eval_samples inputs
                keep = {s for s, _ in self._subset(group_by_source(pairs), self.hparams.max_eval_samples)}
                pairs = [p for p in pairs if p[0] in keep]
            pairs = self._nonempty(pairs, split)
            ds = datasets.Dataset.from_dict({"source": [s for s, _ in pairs], "target": [t for _, t in pairs]})
            # in-memory datasets (no cache files): a fixed fingerprint spares datasets hashing the bound method
            # (it cannot, and warns "couldn't be hashed properly" into every fit log)
            ds = ds.map(self._train_features, batched=True, fn_kwargs={"split": split},
                        remove_columns=["source", "target"], new_fingerprint=f"{self.dataset}-{split}-train")
            if split == "train" and self.hparams.source_continuations:
                extra = datasets.Dataset.from_dict(self._continuation_features(list(dict.fromkeys(s for s, _ in pairs))))
                log.info("%s: %d task rows + %d source-continuation rows", self.dataset, len(ds), len(extra))
                ds = datasets.concatenate_datasets([ds, extra])
        else:
            # ids number the inputs of the whole split, before subsetting: one id is one input in every subset
            # (until 2026-12-01 they numbered the subset, so a shuffled and a first-N subset shared ids, not inputs)
            numbered = list(enumerate(group_by_source(pairs)))
            kept = self._nonempty(self._subset(numbered, self.hparams.max_eval_samples), split)
            ds = datasets.Dataset.from_dict({"id": [f"{self.dataset}-{split}-{k}" for k, _ in kept],
                                             "source": [g[0] for _, g in kept], "references": [g[1] for _, g in kept]})
            ds = ds.map(self._gen_features, batched=True, fn_kwargs={"split": split},
                        new_fingerprint=f"{self.dataset}-{split}-gen")
        if self.num_truncated.get(split):
            log.warning("%s/%s: truncated %d sources to %d tokens", self.dataset, split, self.num_truncated[split],
                        self.hparams.max_source_tokens)
        self._cache[key] = ds
        return ds

    # ---- collation -------------------------------------------------------------------------------------------------
    def _pad(self, seqs: list[list[int]], value: int, left: bool) -> torch.Tensor:
        out = torch.full((len(seqs), max(len(x) for x in seqs)), value, dtype=torch.long)
        for i, x in enumerate(seqs):
            if x:
                (out[i, out.shape[1] - len(x):] if left else out[i, :len(x)]).copy_(torch.tensor(x))
        return out

    def collate_train(self, items: list[dict]) -> dict:  # right padding
        ids = [it["input_ids"] for it in items]
        return {"input_ids": self._pad(ids, self.tokenizer.pad_token_id, left=False),
                "attention_mask": self._pad([[1] * len(x) for x in ids], 0, left=False),
                "labels": self._pad([it["labels"] for it in items], -100, left=False)}

    def collate_generate(self, items: list[dict]) -> dict:  # left padding
        ids = [it["prompt_ids"] for it in items]
        return {"input_ids": self._pad(ids, self.tokenizer.pad_token_id, left=True),
                "attention_mask": self._pad([[1] * len(x) for x in ids], 0, left=True),
                "ids": [it["id"] for it in items],
                "prompts": [self.template.format(source=it["source"]) for it in items],
                "references": [it["references"] for it in items]}

    # ---- loaders -----------------------------------------------------------------------------------------------
    def _loader(self, ds, batch_size, collate, shuffle=False, cls=DataLoader, sampler=None):
        return cls(ds, batch_size=batch_size, shuffle=shuffle, collate_fn=collate, sampler=sampler,
                   num_workers=self.hparams.num_workers, persistent_workers=self.hparams.num_workers > 0)

    def train_dataloader(self):
        # stateful: Lightning saves its position in checkpoints, so a fit resumed mid-epoch sees the batches the
        # uninterrupted run would have seen (a plain DataLoader restarts the epoch)
        return self._loader(self.dataset_for("train", "train"), self.hparams.batch_size, self.collate_train, True,
                            cls=StatefulDataLoader)

    def val_dataloader(self):
        return self._loader(self.dataset_for("validation", "train"), self.hparams.eval_batch_size, self.collate_train)

    def exclude_ids(self, ids: set[str]) -> None:
        """Leave these example ids out of the next test/predict loader (they were decoded by an earlier run that
        wrote into the same folder); an empty set brings every input back."""
        self.skip_ids = set(ids)

    def test_dataloader(self):
        return self.predict_dataloader()

    def predict_dataloader(self):
        ds = self.dataset_for(self.hparams.predict_split, "generate")
        if self.skip_ids:
            ds = ds.select([i for i, x in enumerate(ds["id"]) if x not in self.skip_ids])
        sampler = None
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            # Lightning's own sampler for predict asserts that every rank gets an input; with fewer inputs than
            # ranks (or a resume with one left) a rank gets none here and skips its loop; the writer merges by id
            sampler = ShardSampler(ds, torch.distributed.get_world_size(), torch.distributed.get_rank())
        return self._loader(ds, self.hparams.eval_batch_size, self.collate_generate, sampler=sampler)


class ShardSampler(DistributedSampler):
    """Rank r of W decodes inputs r, r + W, r + 2W, ... once each: uneven shares, an empty one allowed (a
    ``DistributedSampler``, so Lightning keeps it instead of putting its own in)."""

    def __init__(self, dataset, num_replicas: int, rank: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.indices = list(range(rank, len(dataset), num_replicas))
        self.num_samples = len(self.indices)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return self.num_samples


class E2EDataModule(TextGenDataModule):
    dataset = "e2e"
    default_template = "Describe the restaurant from its attributes.\nAttributes: {source}\nDescription:"


class CommonGenDataModule(TextGenDataModule):
    dataset = "commongen"
    default_template = "Write one sentence that uses all of these concepts: {source}\nSentence:"


class CNNDMDataModule(TextGenDataModule):
    dataset = "cnn_dailymail"
    default_template = "Summarize the news article in a few sentences.\nArticle: {source}\nSummary:"


class XSumDataModule(TextGenDataModule):
    dataset = "xsum"
    default_template = "Summarize the news article in one sentence.\nArticle: {source}\nSummary:"


class HealthCareMagicDataModule(TextGenDataModule):
    dataset = "healthcaremagic"
    default_template = "Answer the patient as a doctor.\nPatient: {source}\nDoctor:"


class TextPairDataModule(TextGenDataModule):
    """Your own text pairs: one CSV or JSONL file per split, with a source field and a target field.

    Args (besides the base class's, e.g. ``prompt_template``, ``max_source_tokens``, batch sizes):
        name: the dataset's name in ids, metrics and reports (``<name>-test-0``); reports add no paper rows for it.
        train_file / validation_file / test_file: paths (``.csv``, ``.jsonl`` or ``.json`` with one object per line);
            relative paths are read from ``data_dir`` when given, else from the working folder. ``fit`` needs the
            train and validation files, ``predict``/``test`` the ``predict_split``'s.
        source_field / target_field: column (CSV) or key (JSONL) names.

    Several references: repeat the source on several rows (CSV or JSONL), or give a list in a JSONL target field.
    Inputs without a reference (the target field empty or absent) are decoded; their outputs are written, and the
    quality scores (ROUGE, BLEU, BERTScore) are computed over the inputs that have references. Training uses only
    rows with a reference.
    """

    def __init__(self, name: str = "pairs", train_file: str | None = None, validation_file: str | None = None,
                 test_file: str | None = None, source_field: str = "source", target_field: str = "target",
                 **kwargs):
        for field, value in (("source_field", source_field), ("target_field", target_field), ("name", name)):
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{field}={value!r}: give the column/key name as a non-empty string")
        if source_field == target_field:
            raise ValueError(f"source_field and target_field are both {source_field!r}; name two different fields")
        if kwargs.get("allow_hub"):
            raise ValueError("allow_hub=True loads a paper task from the hub; your own files have no hub copy")
        self.dataset = name
        self.files = {"train": train_file, "validation": validation_file, "test": test_file}
        for split, path in self.files.items():
            if path is not None and Path(path).suffix.lower() not in (".csv", ".jsonl", ".json"):
                raise ValueError(f"{split}_file={path!r}: use a .csv or .jsonl file (one JSON object per line)")
        self.fields = (source_field, target_field)
        super().__init__(**kwargs)

    def _spec(self) -> DatasetSpec:
        fmt = {split: "csv" if Path(p).suffix.lower() == ".csv" else "jsonl" for split, p in self.files.items() if p}
        return DatasetSpec(self.dataset, "", {s: p for s, p in self.files.items() if p}, *self.fields, "jsonl",
                           hub=("", None, {}), hub_fields=self.fields, any_targets=True, optional_target=True,
                           fmt_by_split=fmt)

    def pairs(self, split: str) -> list[tuple[str, str]]:
        if not self.files.get(split):
            raise ValueError(f"{self.dataset}: no {split} file; set data.init_args.{split}_file to a .csv or .jsonl "
                             f"file with fields {self.fields[0]!r} and {self.fields[1]!r}")
        base = Path(self.data_dir).expanduser() if self.hparams.data_dir else Path(".")
        self.source_used = f"local {base / self.files[split]}"
        return read_pairs(self.spec, base, split)


DATAMODULES = {cls.dataset: cls for cls in (E2EDataModule, CommonGenDataModule, CNNDMDataModule, XSumDataModule,
                                            HealthCareMagicDataModule)}
