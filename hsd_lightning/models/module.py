"""One LightningModule for any transformers causal LM: fine-tuning (full or LoRA) and decoding with a skip decoder."""
from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch

from ..decoding import Decoder, Vanilla
from .loading import load_model, load_tokenizer

# LoRA targets per architecture (attention projections, as in the LoRA paper); override with lora_target_modules
LORA_TARGETS = {
    "gpt2": ["c_attn", "c_proj"],
    "phi": ["q_proj", "k_proj", "v_proj", "dense"],
    "gpt_neox": ["query_key_value", "dense"],
    "opt": ["q_proj", "k_proj", "v_proj", "out_proj"],
}
LORA_DEFAULT = ["q_proj", "k_proj", "v_proj", "o_proj"]


class CausalLMModule(L.LightningModule):
    """Fine-tune and decode a decoder-only LM.

    Args:
        model_name_or_path: hub id, local folder, ``smollm2-135m`` or a tiny config (``tiny-gpt2``...).
        finetune: ``full`` or ``lora`` (peft; checkpoints then hold only the adapter weights).
        lora_r, lora_alpha, lora_dropout: LoRA settings (paper: r=16, alpha=32).
        lora_target_modules: module names to adapt; default chosen per architecture.
        learning_rate, weight_decay, warmup_steps: AdamW with linear warm-up (paper: lr 5e-5).
        decoder: the decoder used by predict/test (``--decoder`` on the command line overrides it).
        num_beams, max_new_tokens, generation_kwargs: generation settings (paper: beam 4).
    """

    def __init__(self, model_name_or_path: str = "tiny-gpt2", finetune: str = "full", lora_r: int = 16,
                 lora_alpha: int = 32, lora_dropout: float = 0.05, lora_target_modules: list[str] | None = None,
                 learning_rate: float = 5e-5, weight_decay: float = 0.0, warmup_steps: int = 0,
                 dtype: str = "float32", decoder: Decoder | None = None, num_beams: int = 4,
                 max_new_tokens: int = 64, generation_kwargs: dict[str, Any] | None = None):
        super().__init__()
        if finetune not in ("full", "lora"):
            raise ValueError(f"finetune={finetune!r}; use 'full' or 'lora'")
        self.save_hyperparameters(ignore=["decoder"])
        self.decoder = decoder or Vanilla()
        self.model = load_model(model_name_or_path, dtype=dtype).train()  # Lightning switches to eval for predict
        self.tokenizer = load_tokenizer(model_name_or_path)
        if finetune == "lora":
            self.model = self._wrap_lora(self.model)
            self.strict_loading = False  # LoRA checkpoints hold the adapter only; the base comes from the hub/cache

    def _wrap_lora(self, model):
        from peft import LoraConfig, get_peft_model

        targets = self.hparams.lora_target_modules or LORA_TARGETS.get(model.config.model_type, LORA_DEFAULT)
        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        missing = [t for t in targets if t not in names]
        if missing:
            raise ValueError(f"lora_target_modules {missing} match no module of {type(model).__name__}; "
                             f"linear layers there include {sorted(n for n in names if 'proj' in n or 'attn' in n)[:12]}")
        cfg = LoraConfig(r=self.hparams.lora_r, lora_alpha=self.hparams.lora_alpha,
                         lora_dropout=self.hparams.lora_dropout, target_modules=targets, task_type="CAUSAL_LM")
        return get_peft_model(model, cfg)

    # ---- training ------------------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        loss = self.model(**batch).loss
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        loss = self.model(**batch).loss
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=batch["input_ids"].shape[0])

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.hparams.learning_rate, weight_decay=self.hparams.weight_decay)
        warm = max(1, self.hparams.warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warm))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint):
        checkpoint["decoder"] = {"name": self.decoder.name, **self.decoder.settings()}
        if self.hparams.finetune == "lora":  # adapter weights only
            keep = {n for n, p in self.named_parameters() if p.requires_grad}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    def on_load_checkpoint(self, checkpoint):
        saved = checkpoint.get("decoder")
        if saved and getattr(self, "_decoder_from_cli", False) is False:
            from ..decoding import build_decoder
            self.decoder = build_decoder(**saved)

    # ---- decoding ------------------------------------------------------------------------------------------------
    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        gen = dict(self.hparams.generation_kwargs or {})
        gen.setdefault("pad_token_id", self.tokenizer.pad_token_id)
        gen.setdefault("eos_token_id", self.tokenizer.eos_token_id)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = self.decoder.generate(self.model, batch["input_ids"], attention_mask=batch["attention_mask"],
                                    max_new_tokens=self.hparams.max_new_tokens, num_beams=self.hparams.num_beams,
                                    **gen)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        texts = self.tokenizer.batch_decode(out.new_tokens, skip_special_tokens=True)
        lpt = out.layers_per_token.cpu()
        records = []
        for i, text in enumerate(texts):
            real = lpt[i] > 0
            records.append({
                "id": batch["ids"][i], "prompt": batch["prompts"][i], "prediction": text.strip(),
                "references": batch["references"][i], "layers_per_token": lpt[i][real].tolist(),
                "generated_tokens": int(real.sum()), "generation_seconds": seconds / len(texts),
                "decoder": self.decoder.describe(),
            })
        return records

    def test_step(self, batch, batch_idx):
        return self.predict_step(batch, batch_idx)
