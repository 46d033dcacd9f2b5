"""One LightningModule for any transformers causal LM: fine-tuning (full or LoRA) and decoding with a skip decoder."""
from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from ..decoding import Decoder, Vanilla, build_decoder
from ..decoding.families import counted_forward_passes
from ..decoding.plans import PlanMixture, planned
from ..families import family
from ..training.checkpoint import read_checkpoint
from ..training.guards import SigtermCheckpoint
from ..training.resume import rng_state, set_rng_state, start_next_epoch_fresh
from ..training.shared_prompt import shared_prompt_losses
from .loading import load_model, load_tokenizer

log = logging.getLogger(__name__)


def _wide_lora_config(folder, rank: int):
    """The LoRA config of the adapter in ``folder`` widened to ``rank`` (see ``adapter_rank``), and its saved rank."""
    from peft import LoraConfig

    cfg = json.loads((folder / "adapter_config.json").read_text())
    r, alpha = cfg["r"], cfg["lora_alpha"]
    if rank < r:
        raise ValueError(f"adapter_rank={rank} is below the rank of adapter {folder.name!r} (r={r}); give a rank "
                         f">= {r}, or adapter_rank null to keep it")
    if cfg.get("use_rslora") or cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise ValueError(f"adapter {folder.name!r} uses rsLoRA or per-module ranks, which adapter_rank does not "
                         "widen; set adapter_rank null")
    return LoraConfig(r=rank, lora_alpha=alpha * rank / r, lora_dropout=cfg.get("lora_dropout", 0.0),
                      target_modules=cfg["target_modules"], bias=cfg.get("bias", "none"), task_type="CAUSAL_LM"), r


def _widened_adapter(model, folder, wide, r: int):
    """``model`` with the LoRA adapter in ``folder`` (rank ``r``) loaded into the wider LoRA ``wide``. peft loads an
    adapter only at its saved rank and has no call to grow one, so the wider LoRA is built with peft and the saved
    A / B matrices are copied into its first ``r`` rows / columns (peft starts the rest of B at zero)."""
    from peft import get_peft_model
    from safetensors.torch import load_file

    model = get_peft_model(model, wide)
    params = dict(model.named_parameters())
    saved = load_file(folder / "adapter_model.safetensors")
    names = {k: k.replace(".lora_A.weight", ".lora_A.default.weight").replace(".lora_B.weight", ".lora_B.default.weight")
             for k in saved}
    lora = {n for n in params if ".lora_" in n}
    if set(names.values()) != lora:
        raise ValueError(f"adapter {folder.name!r} does not match the LoRA layers its config names "
                         f"({len(set(names.values()) ^ lora)} weights differ); re-export it")
    with torch.no_grad():
        for key, name in names.items():
            value = saved[key].to(params[name].dtype)
            if ".lora_A." in name:
                params[name][:r].copy_(value)  # (r, in): the new rows keep peft's random init
            else:
                params[name][:, :r].copy_(value)  # (out, r): the new columns are zero, so nothing changes yet
                params[name][:, r:].zero_()
    return model


class CausalLMModule(L.LightningModule):
    """Fine-tune and decode a decoder-only LM.

    Args:
        model_name_or_path: hub id, local folder, ``smollm2-135m`` or a tiny config (``tiny-gpt2``...).
        finetune: ``full`` or ``lora`` (peft; checkpoints then hold only the adapter weights).
        lora_r, lora_alpha, lora_dropout: LoRA settings (paper: r=16, alpha=32).
        lora_target_modules: module names to adapt; default chosen per architecture.
        learning_rate, weight_decay, warmup_steps: AdamW with linear warm-up (paper: lr 5e-5).
        lr_decay_steps: the last N optimizer steps of the run (up to ``trainer.max_steps``) decay the learning rate
            linearly to 0, after the constant phase (warm-up, stable, decay); 0 (default): constant after warm-up.
            The schedule is a function of the global step, so a run continued from another's checkpoint with a
            larger ``max_steps`` and ``lr_decay_steps`` anneals only its own last steps.
        decoder: the decoder used by predict/test (``--decoder`` on the command line overrides it).
        num_beams, max_new_tokens, generation_kwargs: generation settings (paper: beam 4).
        t_max: horizon of the layer schedules (eq. 4) for decoding *and* skip-aware training; default
            ``max_new_tokens``. A skip-aware checkpoint records it and ``predict`` warns when decoding uses another.
        train_plans: skip-aware fine-tuning (default off: the paper fine-tunes with all layers). A list of plans,
            each a decoder's settings plus an optional ``weight``, e.g. ``[{name: vanilla, weight: 1},
            {name: hsd, s: 1, e_max: 10, weight: 1}]``. Every training row draws one plan; its prompt positions run
            every layer and the position feeding generated token t runs the layers of step t (skipped layers add
            nothing to that position's residual stream), which is exactly what decoding with that plan computes.
        plan_seed: seed of the per-row plan draws (drawn from (seed, step, rank), so a resumed run draws the same).
        val_plans: with ``train_plans``, also log the validation loss under each plan (``val/loss_<plan>``).
        distill_weight: with ``train_plans``, mix the reference loss with self-distillation: the loss of a row is
            ``(1 - w) * CE(labels) + w * KL(full-depth next-token distribution || planned one)`` on its target
            tokens, the full-depth pass being the same model with every layer, without gradient (default 0: off).
        all_plans_per_row: with ``train_plans``, train every row under *every* plan instead of one drawn plan: the
            prompt runs once (every plan runs it with all layers) and its KV cache is shared by the plans' target
            passes (``training/shared_prompt.py``); the loss is the weight-averaged loss of the plans. Each plan
            sees every row, for about one extra target pass per plan: on XSum's shape (410-token prompts, 40-token
            targets) 4 plans cost 1.10x one step; where targets are as long as prompts (HealthCareMagic) 2.25x, and
            the target activations grow with the number of plans (split the batch: ``accumulate_grad_batches``).
            Validation computes its per-plan losses the same way (the same numbers). Default off.
        adapter: start from a saved LoRA adapter (``finetune: lora``): a folder written by
            ``python -m hsd_lightning export-adapter`` or the name of one shipped in ``hsd_lightning/adapters``
            (e.g. ``smollm2-e2e-skipaware``). Its LoRA settings come from the folder.
        init_weights: start a *full* fine-tune from the weights of a checkpoint written by ``fit`` (a ``.ckpt``,
            e.g. a standard fine-tune to continue under ``train_plans``): weights only, with a fresh optimizer,
            step 0 and learning-rate schedule, which ``--ckpt_path`` (resume a run where it stopped) cannot give.
            Loaded when ``fit`` starts; a resumed run (``--ckpt_path last``) then restores its own weights over
            them, and ``predict`` never reads the file (the weights decoded are the checkpoint's).
        unlikelihood_weight: with ``train_plans``, add ``w * UL`` to the loss of every row run under a skipping plan:
            token-level unlikelihood (Welleck et al., 2020), ``-log(1 - p(c))`` summed over the candidates ``c`` =
            the target tokens before this position other than the one due, averaged over target positions, so that
            the plan learns not to steer back to what the text has already said (default 0: off).
        adapter_rank: with ``adapter``, widen the loaded LoRA adapter to this rank before training (more capacity
            for a run that continues it): its ``r`` components are kept, the new ones start with ``B = 0`` (so the
            model starts exactly where the adapter left it) and ``lora_alpha`` grows with the rank (``alpha / r``
            kept). The exported adapter then has this rank. Default ``null``: the adapter's own rank.
        teacher_adapter: with ``distill_weight > 0``, the KL's full-depth teacher is this LoRA adapter on the same
            base model, frozen (e.g. a standard fine-tune that drops fewer slots), instead of the trained weights
            themselves: every row, the vanilla one included, is pulled towards it. Loaded when training starts,
            kept out of checkpoints and the optimizer; costs one extra forward pass per step. Default ``null``.
        merge_lora: with ``finetune: lora``, predict and test fold the adapter into the base weights first (peft's
            ``merge_adapter``): every linear layer then costs one matrix product instead of three, and the prompt
            pass, which runs every layer for every decoder, costs what the base model costs. The tokens are those of
            the unmerged adapter up to float rounding. ``fit`` unfolds it again (``unmerge_adapter``) before training.
            Default ``true``; ``false`` decodes through the unmerged adapter.
    """

    def __init__(self, model_name_or_path: str = "tiny-gpt2", finetune: str = "full", lora_r: int = 16,
                 lora_alpha: int = 32, lora_dropout: float = 0.05, lora_target_modules: list[str] | None = None,
                 learning_rate: float = 5e-5, weight_decay: float = 0.0, warmup_steps: int = 0,
                 dtype: str = "float32", decoder: Decoder | None = None, num_beams: int = 4,
                 max_new_tokens: int = 64, generation_kwargs: dict[str, Any] | None = None,
                 t_max: int | None = None, train_plans: list[dict[str, Any]] | None = None, plan_seed: int = 0,
                 val_plans: bool = True, adapter: str | None = None, distill_weight: float = 0.0,
                 lr_decay_steps: int = 0, all_plans_per_row: bool = False, init_weights: str | None = None,
                 unlikelihood_weight: float = 0.0, adapter_rank: int | None = None,
                 teacher_adapter: str | None = None, merge_lora: bool = True):
        super().__init__()
        if finetune not in ("full", "lora"):
            raise ValueError(f"finetune={finetune!r}; use 'full' or 'lora'")
        if adapter and finetune != "lora":
            raise ValueError(f"adapter={adapter!r} needs finetune=lora (an adapter is LoRA weights)")
        if adapter_rank is not None and (not adapter or isinstance(adapter_rank, bool)
                                         or not isinstance(adapter_rank, int) or adapter_rank < 1):
            raise ValueError(f"adapter_rank={adapter_rank!r} widens a loaded adapter: give an integer >= 1 with "
                             "--model.adapter, or adapter_rank null (a fresh LoRA takes --model.lora_r)")
        if init_weights and finetune != "full":
            raise ValueError(f"init_weights={init_weights!r} needs finetune=full (it loads every weight); to continue "
                             "a LoRA fine-tune, export its adapter and pass --model.adapter")
        if not 0.0 <= distill_weight <= 1.0:
            raise ValueError(f"distill_weight={distill_weight!r} must lie in [0, 1] (0 = labels only, 1 = teacher only)")
        if teacher_adapter and not (distill_weight and train_plans):
            raise ValueError(f"teacher_adapter={teacher_adapter!r} is the teacher of the distillation loss: set "
                             "model.distill_weight > 0 and model.train_plans, or teacher_adapter null")
        if teacher_adapter and all_plans_per_row:
            raise ValueError(f"teacher_adapter={teacher_adapter!r} applies to one drawn plan per row; set "
                             "all_plans_per_row=false")
        if not unlikelihood_weight >= 0.0:
            raise ValueError(f"unlikelihood_weight={unlikelihood_weight!r} must be >= 0 (0 = off)")
        if unlikelihood_weight and all_plans_per_row:
            raise ValueError("unlikelihood_weight applies to one drawn plan per row; set all_plans_per_row=false")
        if not isinstance(lr_decay_steps, int) or lr_decay_steps < 0:
            raise ValueError(f"lr_decay_steps={lr_decay_steps!r} must be an integer >= 0 (0 = no decay)")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens!r} must be an integer >= 1")
        if not isinstance(num_beams, int) or num_beams < 1:
            raise ValueError(f"num_beams={num_beams!r} must be an integer >= 1 (1 = greedy)")
        if t_max is not None and (not isinstance(t_max, int) or isinstance(t_max, bool) or t_max < 1):
            raise ValueError(f"t_max={t_max!r} must be an integer >= 1 (the schedules' horizon), or null for "
                             "max_new_tokens")
        self.save_hyperparameters(ignore=["decoder"])
        self.decoder = decoder or Vanilla()
        # a decoder given in the config (model.decoder) or on the command line (--decoder, see use_decoder) wins
        # over the one saved in a checkpoint; with none given, predict decodes with the checkpoint's decoder
        self.decoder_pinned = decoder is not None
        self.plans = _build_mixture(train_plans, self.t_max) if train_plans else None
        if all_plans_per_row and not train_plans:
            raise ValueError("all_plans_per_row=True trains every row under every plan of model.train_plans, which is "
                             "not set; set train_plans or drop all_plans_per_row")
        self.trained_t_max: int | None = None  # t_max a loaded skip-aware checkpoint was trained for
        self._t_max_warned: tuple | None = None
        self._warmed_up = False  # one untimed decode per process before the first timed one (predict_step)
        self._rng_to_restore: dict | None = None  # RNG states of a checkpoint being resumed (see training/resume.py)
        self.training_kind = "zero-shot"  # of the weights decoded: zero-shot | FT | skip-aware FT (set on load)
        self.model = load_model(model_name_or_path, dtype=dtype).train()  # Lightning switches to eval for predict
        self.tokenizer = load_tokenizer(model_name_or_path)
        self.checkpoint_path: str | None = None  # what was loaded on top of the base weights (for reports)
        if adapter:
            self.model = self._load_adapter(self.model, adapter)
        elif finetune == "lora":
            self.model = self._wrap_lora(self.model)
        if finetune == "lora":
            self.strict_loading = False  # LoRA checkpoints hold the adapter only; the base comes from the hub/cache

    def _load_adapter(self, model, adapter: str):
        from peft import PeftModel

        from .adapters import read_record, resolve_adapter

        folder = resolve_adapter(adapter)
        wide = _wide_lora_config(folder, self.hparams.adapter_rank) if self.hparams.adapter_rank else None
        try:
            if wide:
                model = _widened_adapter(model, folder, *wide)
            else:
                model = PeftModel.from_pretrained(model, folder, is_trainable=True)
        except ValueError as err:  # peft: the adapter's target modules do not exist in this model
            raise ValueError(f"adapter {adapter!r} does not fit model {self.hparams.model_name_or_path!r} "
                             f"({type(model).__name__}): {str(err).splitlines()[0]}; use the model it was trained on "
                             "or --model.adapter null") from None
        record = read_record(folder)
        self.trained_t_max = record.get("t_max")
        self.training_kind = "skip-aware FT" if record.get("skip_aware") else "FT"
        self.checkpoint_path = f"adapter:{folder.name}"
        return model

    def _wrap_lora(self, model):
        from peft import LoraConfig, get_peft_model

        targets = self.hparams.lora_target_modules or list(family(model.config.model_type).lora_targets)
        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        missing = [t for t in targets if t not in names]
        if missing:
            raise ValueError(f"lora_target_modules {missing} match no module of {type(model).__name__}; "
                             f"linear layers there include {sorted(n for n in names if 'proj' in n or 'attn' in n)[:12]}")
        cfg = LoraConfig(r=self.hparams.lora_r, lora_alpha=self.hparams.lora_alpha,
                         lora_dropout=self.hparams.lora_dropout, target_modules=targets, task_type="CAUSAL_LM")
        return get_peft_model(model, cfg)

    def use_decoder(self, decoder: Decoder) -> None:
        """Decode with ``decoder`` from now on, whatever a checkpoint loaded later says (``--decoder``)."""
        self.decoder, self.decoder_pinned = decoder, True

    @property
    def t_max(self) -> int:
        """Schedule horizon used by decoding and skip-aware training."""
        return self.hparams.t_max or self.hparams.max_new_tokens

    # ---- training ------------------------------------------------------------------------------------------------
    def plan_loss(self, batch: dict, decoders: list[Decoder]) -> torch.Tensor:
        """Mean target-token loss with row b run under ``decoders[b]``'s layer plan (see ``decoding/plans.py``)."""
        run = self.plans.run_mask(decoders, batch["labels"], self.model.config.num_hidden_layers)
        w = self.hparams.distill_weight if self.training else 0.0
        ul = self.hparams.get("unlikelihood_weight", 0.0) if self.training else 0.0
        if not w and not ul:
            with planned(self.model, run):
                return self.model(**batch).loss
        if not w:
            with planned(self.model, run):
                out = self.model(**batch)
            skipping = torch.tensor([d.name != "vanilla" for d in decoders], device=out.logits.device)
            return out.loss + ul * unlikelihood(out.logits, batch["labels"], skipping)
        with torch.no_grad():  # the teacher: the same weights (or model.teacher_adapter's), every layer
            teacher = self._teacher()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        with planned(self.model, run):
            out = self.model(**batch)
        # next-token targets: logits at position i predict labels[i + 1] (as transformers' own loss shifts them)
        target = batch["labels"][:, 1:] != -100
        student = out.logits[:, :-1][target].float().log_softmax(-1)
        ref = teacher[:, :-1][target].float().log_softmax(-1)
        kl = torch.nn.functional.kl_div(student, ref, log_target=True, reduction="batchmean")
        loss = (1 - w) * out.loss + w * kl
        if ul:
            skipping = torch.tensor([d.name != "vanilla" for d in decoders], device=out.logits.device)
            loss = loss + ul * unlikelihood(out.logits, batch["labels"], skipping)
        return loss

    def _teacher(self):
        """The full-depth model whose distribution the distillation loss pulls towards: the trained model itself,
        or a frozen copy of the base with ``teacher_adapter`` (loaded once, on first use)."""
        name = self.hparams.get("teacher_adapter")
        if not name:
            return self.model
        if self.__dict__.get("_frozen_teacher") is None:
            from peft import PeftModel

            from .adapters import resolve_adapter

            base = load_model(self.hparams.model_name_or_path, dtype=self.hparams.dtype)
            teacher = PeftModel.from_pretrained(base, resolve_adapter(name)).eval().requires_grad_(False)
            # a plain attribute, not a submodule: kept out of state_dict, checkpoints and the optimizer
            self.__dict__["_frozen_teacher"] = teacher.to(self.device)
        return self.__dict__["_frozen_teacher"]

    def training_step(self, batch, batch_idx):
        rows = batch["input_ids"].shape[0]
        with _out_of_memory_hint(f"training on a batch of {rows} x {batch['input_ids'].shape[1]} tokens",
                                 "data.init_args.batch_size", rows,
                                 " (and trainer.accumulate_grad_batches to keep the effective batch)"):
            if self.plans is None:
                loss = self.model(**batch).loss
            elif self.hparams.all_plans_per_row:
                decoders, weights = self.plans.decoders, self.plans.weights
                losses = self.all_plan_losses(batch, decoders)
                loss = sum(w * x for w, x in zip(weights, losses)) / sum(weights)
            else:
                rng = random.Random(hash((self.hparams.plan_seed, self.global_step, self.global_rank)))
                loss = self.plan_loss(batch, self.plans.draw(rows, rng))
        if not torch.isfinite(loss):  # stop before a checkpoint can hold the weights this step would write
            lr = self.trainer.optimizers[0].param_groups[0]["lr"] if self._trainer and self.trainer.optimizers else None
            raise ValueError(f"fit: the loss is {loss.item()} at step {self.global_step} (learning rate "
                             f"{lr if lr is None else f'{lr:.3g}'}); no checkpoint was written from it; lower "
                             "--model.learning_rate (or check the data), and resume from the last checkpoint")
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=rows)
        return loss

    def configure_callbacks(self):
        return [SigtermCheckpoint()]  # every run, whatever its config's callbacks: a SIGTERM'd fit saves first

    def all_plan_losses(self, batch: dict, decoders: list[Decoder]) -> list[torch.Tensor]:
        """Loss of the batch under each of ``decoders``, one prompt pass shared by all (``all_plans_per_row``)."""
        w = self.hparams.distill_weight if self.training else 0.0
        full = [i for i, d in enumerate(decoders) if d.name == "vanilla"]
        if w and not full:  # the teacher: a full-depth branch whose loss is not used
            return self.all_plan_losses(batch, [*decoders, Vanilla()])[:-1]
        return shared_prompt_losses(self.model, batch, decoders, self.t_max, w, full[0] if full else None)

    def validation_step(self, batch, batch_idx):
        rows = batch["input_ids"].shape[0]
        if self.plans is not None and self.hparams.all_plans_per_row:
            # val/loss and each plan's loss from one shared prompt pass (the same numbers as the code below)
            decoders = [Vanilla()] + [d for d in self.plans.decoders if d.name != "vanilla"]
            losses = self.all_plan_losses(batch, decoders if self.hparams.val_plans else decoders[:1])
            self.log("val/loss", losses[0], prog_bar=True, sync_dist=True, batch_size=rows)
            for dec, loss in zip(decoders[1:], losses[1:]):
                self.log(f"val/loss_{dec.describe()}", loss, sync_dist=True, batch_size=rows)
            return
        loss = self.model(**batch).loss
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=rows)
        if self.plans is not None and self.hparams.val_plans:
            for dec in self.plans.decoders:
                if dec.name != "vanilla":
                    self.log(f"val/loss_{dec.describe()}", self.plan_loss(batch, [dec] * rows), sync_dist=True,
                             batch_size=rows)

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.hparams.learning_rate, weight_decay=self.hparams.weight_decay)
        warm, decay = max(1, self.hparams.warmup_steps), self.hparams.lr_decay_steps
        last = self.trainer.max_steps if decay else 0
        if decay and last < 1:
            raise ValueError(f"lr_decay_steps={decay} decays towards trainer.max_steps, which is not set; "
                             "set --trainer.max_steps (the run's last optimizer step)")

        # LambdaLR gets the number of scheduler steps taken (= optimizer steps done): the step about to run is step+1
        def factor(step: int) -> float:
            return max(0.0, min(1.0, (step + 1) / warm, (last - step) / decay if decay else 1.0))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_start(self):
        # here, not in configure_optimizers: estimated_stepping_batches builds the train loader, and built before
        # the checkpoint is restored, Lightning would not give it its saved position (a resumed run restarts the epoch)
        total, warm = self.trainer.estimated_stepping_batches, self.hparams.warmup_steps
        if isinstance(total, (int, float)) and 0 < total < warm:
            log.warning("warmup_steps=%d exceeds this run's %d optimizer steps: the learning rate never reaches "
                        "learning_rate=%g; set model.warmup_steps below %d", warm, total,
                        self.hparams.learning_rate, total)

    def on_train_batch_start(self, batch, batch_idx):
        if self._rng_to_restore is not None:  # a resumed fit: dropout continues as if never stopped
            set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None

    def on_save_checkpoint(self, checkpoint):
        bad = first_non_finite(checkpoint["state_dict"].items())
        if bad is not None:  # a diverged run: its weights are never written, as best or as last
            raise ValueError(f"fit: the weights hold NaN or inf at step {self.global_step} (first: {bad}); no checkpoint "
                             "was written from them; lower --model.learning_rate and resume from the last checkpoint")
        checkpoint["rng"] = rng_state()
        checkpoint["decoder"] = {"name": self.decoder.name, **self.decoder.settings()}
        if self.plans is not None:
            checkpoint["skip_aware"] = {"plans": self.hparams.train_plans, "t_max": self.t_max}
        if self.hparams.finetune == "lora":  # adapter weights only
            keep = {n for n, p in self.named_parameters() if p.requires_grad}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """LoRA checkpoints hold exactly the adapter weights: every adapter weight must be there and nothing else
        (a full-FT checkpoint or another LoRA layout would otherwise load nothing, silently)."""
        if self.hparams.finetune == "lora":
            self.set_lora_merged(False)  # weights folded from the adapter being replaced would stay in the base weights
            want = {n for n, p in self.named_parameters() if p.requires_grad}
            have = set(state_dict)
            missing, unexpected = sorted(want - have), sorted(have - want)
            if missing or unexpected:
                raise ValueError(
                    f"checkpoint does not fit this LoRA model: {len(missing)} adapter weights missing "
                    f"(e.g. {missing[:2]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:2]}); load it with "
                    "the finetune, lora_r and lora_target_modules it was trained with")
            return super().load_state_dict(state_dict, strict=False, assign=assign)
        try:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        except RuntimeError as err:  # torch lists every key; one line says what is wrong and what to do
            mine = self.state_dict()
            missing = [k for k in mine if k not in state_dict]
            shapes = [k for k in mine if k in state_dict and state_dict[k].shape != mine[k].shape]
            lora = [k for k in state_dict if "lora_" in k]
            hint = ("it holds LoRA weights: load it with --model.finetune lora" if lora else
                    f"load it with the model it was trained from (not {self.hparams.model_name_or_path!r})")
            raise ValueError(f"checkpoint does not fit this model: {len(missing)} weights missing "
                             f"(e.g. {missing[:1]}), {len(shapes)} of another shape (e.g. {shapes[:1]}); {hint}") from err

    def on_load_checkpoint(self, checkpoint):
        self._rng_to_restore = checkpoint.get("rng")
        start_next_epoch_fresh(checkpoint)  # before Lightning restores the loops from the same dict
        saved = checkpoint.get("decoder")
        if saved and not self.decoder_pinned:
            self.decoder = build_decoder(**saved)
        self.trained_t_max = (checkpoint.get("skip_aware") or {}).get("t_max")
        self.training_kind = "skip-aware FT" if checkpoint.get("skip_aware") else "FT"

    def setup(self, stage):
        """Fail before any work when the decoder does not fit the model's depth, or prompts (plus generated tokens)
        do not fit its context; start ``fit`` from ``init_weights``."""
        if stage == "fit" and self.hparams.get("init_weights"):
            self._load_init_weights(self.hparams.init_weights)
        if stage in ("predict", "test"):
            self.decoder.check_depth(self.model.config.num_hidden_layers)
        ctx = getattr(self.model.config, "max_position_embeddings", None) or getattr(self.model.config, "n_positions",
                                                                                     None)
        longest = getattr(self.trainer.datamodule, "max_prompt_tokens", lambda: None)() if self._trainer else None
        if not ctx or longest is None:
            return
        new = self.hparams.max_new_tokens if stage in ("predict", "test") else 1
        if longest + new > ctx:
            raise ValueError(f"prompts of up to {longest} tokens (data.max_source_tokens="
                             f"{self.trainer.datamodule.hparams.max_source_tokens} + template)"
                             f"{f' + max_new_tokens={new}' if new > 1 else ''} exceed the model's context of {ctx} "
                             f"tokens; set data.init_args.max_source_tokens to at most "
                             f"{self.trainer.datamodule.hparams.max_source_tokens - (longest + new - ctx)}")

    def _load_init_weights(self, path: str) -> None:
        # here, not in __init__: predict rebuilds the module from a checkpoint's hyper-parameters, and the weights it
        # decodes are that checkpoint's, so the file need not exist there; a resumed fit restores its own weights
        # after setup. The strategy's checkpoint IO reads the file (local or remote, as --ckpt_path would).
        checkpoint = read_checkpoint(path, "init_weights")  # weights only, local or remote
        if "state_dict" not in checkpoint:
            raise ValueError(f"init_weights={path!r} holds no 'state_dict': give a checkpoint written by fit (.ckpt)")
        self.load_state_dict(checkpoint["state_dict"])  # one-line errors for another model or a LoRA checkpoint
        kind = "skip-aware FT" if checkpoint.get("skip_aware") else "FT"
        rank_zero_info(f"fit: starting from the weights of {path} ({kind}, step {checkpoint.get('global_step')}): "
                       "a fresh optimizer and schedule")

    def on_predict_start(self):
        self.check_finite_weights()
        self.check_t_max()
        self.set_lora_merged(self.hparams.get("merge_lora", True))

    def on_test_start(self):
        self.check_finite_weights()
        self.check_t_max()
        self.set_lora_merged(self.hparams.get("merge_lora", True))

    def on_fit_start(self):
        self.set_lora_merged(False)  # training updates the adapter, which a merged layer would not read

    def lora_merged(self) -> bool:
        """Whether the LoRA adapter is folded into the base weights (peft marks each layer it merged)."""
        return any(getattr(m, "merged", False) for m in self.model.modules() if hasattr(m, "merged_adapters"))

    def set_lora_merged(self, merge: bool) -> None:
        """Fold the LoRA adapter into the base weights (``merge=True``) or take it out again; nothing to do for a
        full fine-tune or when it already is as asked. It stays merged across the predict runs of one process (a
        sweep), so every decoder reads the same folded weights and no merge/unmerge rounding builds up."""
        if self.hparams.finetune != "lora" or self.lora_merged() == merge:
            return
        if merge:
            self.model.merge_adapter()
        else:
            self.model.unmerge_adapter()

    def check_finite_weights(self) -> None:
        """Weights holding NaN/inf (a diverged fit) decode to noise such as "!!!!": refuse them with one line."""
        bad = first_non_finite(self.named_parameters())
        if bad is not None:
            raise ValueError(f"the weights hold NaN or inf values (first: {bad}), e.g. from a fit whose loss diverged; "
                             "decode an earlier checkpoint")

    def check_t_max(self) -> bool:
        """Warn when a skip-aware checkpoint is decoded with another schedule horizon than it was trained for."""
        if self.trained_t_max is None or self.trained_t_max == self.t_max:
            return True
        if self._t_max_warned != (self.trained_t_max, self.t_max):  # once per mismatch, not once per predict run
            self._t_max_warned = (self.trained_t_max, self.t_max)
            log.warning("this checkpoint was trained for layer plans with t_max=%d but decoding uses t_max=%d: the "
                        "skipping decoders then run plans it was not trained for; pass --model.t_max %d",
                        self.trained_t_max, self.t_max, self.trained_t_max)
        return False

    # ---- decoding ------------------------------------------------------------------------------------------------
    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        gen = dict(self.hparams.generation_kwargs or {})
        gen.setdefault("pad_token_id", self.tokenizer.pad_token_id)
        gen.setdefault("eos_token_id", self.tokenizer.eos_token_id)
        rows = batch["input_ids"].shape[0]
        beams = self.hparams.num_beams
        with _out_of_memory_hint(f"decoding a batch of {rows} inputs x {beams} beams",
                                 "data.init_args.eval_batch_size" if rows > 1 else "model.num_beams",
                                 rows if rows > 1 else beams,
                                 "; the predictions written so far are kept and a rerun into the same output_dir "
                                 "resumes after them"):
            if not self._warmed_up:
                # The first decode of a process pays one-time costs (allocator growth, kernel selection for these
                # shapes): without this, whichever decoder a sweep runs first is timed slower than it decodes. Two
                # tokens of the first batch, untimed, once per process.
                self._warmed_up = True
                self.decoder.generate(self.model, batch["input_ids"], attention_mask=batch["attention_mask"],
                                      max_new_tokens=min(2, self.hparams.max_new_tokens), num_beams=beams,
                                      t_max=self.t_max, **gen)
            # seconds per forward pass separate "a step costs what its layers cost" from how many steps beam search ran
            with counted_forward_passes(self.model) as passes:
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                out = self.decoder.generate(self.model, batch["input_ids"], attention_mask=batch["attention_mask"],
                                            max_new_tokens=self.hparams.max_new_tokens, num_beams=beams,
                                            t_max=self.t_max, **gen)
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        texts = self.tokenizer.batch_decode(out.new_tokens, skip_special_tokens=True)
        lpt = out.layers_per_token.cpu()
        new = out.new_tokens.cpu()
        records = []
        for i, text in enumerate(texts):
            real = lpt[i] > 0
            records.append({
                "id": batch["ids"][i], "prompt": batch["prompts"][i], "prediction": text.strip(),
                "references": batch["references"][i], "layers_per_token": lpt[i][real].tolist(),
                "token_ids": new[i][real].tolist(),  # up to and including EOS (the agreement metric re-reads them)
                "generated_tokens": int(real.sum()), "generation_seconds": seconds / len(texts),
                "forward_passes": len(passes) / len(texts),  # this input's share of the batch's, like the seconds
                "decoder": self.decoder.describe(),
            })
        return records

    def test_step(self, batch, batch_idx):
        return self.predict_step(batch, batch_idx)


def first_non_finite(named_tensors) -> str | None:
    """The name of the first floating-point tensor holding NaN or inf (a diverged fit), else None."""
    return next((n for n, v in named_tensors if v.is_floating_point() and not torch.isfinite(v).all()), None)


@contextlib.contextmanager
def _out_of_memory_hint(what: str, setting: str, now: int, more: str = ""):
    """Out of memory (GPU, or CPU allocation) becomes one line that names the batch and the setting to lower."""
    try:
        yield
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and not isinstance(err, torch.OutOfMemoryError) \
                and "can't allocate memory" not in str(err) and "out of memory" not in str(err):
            raise
        raise MemoryError(f"out of memory {what}; set --{setting} below {now} (e.g. {max(1, now // 2)}){more}") \
            from err


def unlikelihood(logits: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Token-level unlikelihood over the target positions of ``rows`` (bool ``[B]``): at the position due to give
    target token k, ``-log(1 - p(c))`` summed over the candidates c = the row's target tokens before k that are not
    token k; the mean over those positions (0 when there are none). Written by hand: no library we use has it."""
    logits, target = logits[:, :-1], labels[:, 1:]  # logits at i predict labels[i + 1]
    mask = (target != -100) & rows[:, None]
    if not mask.any():
        return logits.sum() * 0.0
    vocab = logits.shape[-1]
    onehot = torch.nn.functional.one_hot(target.clamp(min=0), vocab).bool() & (target != -100)[..., None]
    seen = onehot.cumsum(1, dtype=torch.int16).bool()  # tokens of the target up to and including position k
    cand = torch.zeros_like(seen)
    cand[:, 1:] = seen[:, :-1]  # strictly before k
    cand &= ~onehot  # never the token due
    probs = logits[mask].float().softmax(-1)
    penalty = -torch.log((1 - probs).clamp(min=1e-5)) * cand[mask]
    return penalty.sum(-1).mean()


def _build_mixture(train_plans: list[dict[str, Any]], t_max: int) -> PlanMixture:
    decoders, weights = [], []
    for i, spec in enumerate(train_plans):
        if not isinstance(spec, dict) or "name" not in spec:
            raise ValueError(f"train_plans[{i}]={spec!r}: each plan is a mapping with a decoder name, "
                             "e.g. {name: hsd, s: 1, e_max: 10, weight: 1}")
        spec = dict(spec)
        weights.append(float(spec.pop("weight", 1.0)))
        if spec["name"] == "calm":
            raise ValueError("train_plans: calm has no static layer plan to train for; use vanilla, skipdecode or hsd")
        decoders.append(build_decoder(**spec))
    return PlanMixture(decoders, weights, t_max)
