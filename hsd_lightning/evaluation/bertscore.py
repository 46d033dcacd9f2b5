"""BERTScore F1 of (prediction, reference) pairs, each pair scored on its own.

Written by hand because torchmetrics 1.9.0's ``BERTScore`` misaligns pairs: it sorts predictions and references by
length, separately, for batching, then indexes the embeddings with the sorting permutation instead of its inverse
(torchmetrics issue #2728; its #2347 "fix" applies the permutation a second time). Whenever lengths differ, a
prediction is then compared with another pair's reference: measured on 20 E2E outputs (183 pairs), pair 0 scored
0.377 in the batch and 0.792 alone. ``tests/test_metrics.py`` checks that this module equals torchmetrics on pairs
scored one at a time (where its sorting is the identity) and is invariant to batching.

The definition is torchmetrics' (Zhang et al., 2020, without idf or baseline rescaling): contextual embeddings of
one layer (default the last), L2-normalised; [CLS] and [SEP] (and padding) get zero vectors; precision = mean over
prediction tokens of the best cosine with a reference token, recall the converse, F1 their harmonic mean.
"""
from __future__ import annotations

import torch


class PairBERTScore:
    def __init__(self, model_name_or_path: str, device: torch.device | str = "cpu", num_layers: int | None = None,
                 max_length: int = 512, batch_size: int = 64):
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
        self.model = AutoModel.from_pretrained(model_name_or_path).eval().to(device)
        self.device, self.num_layers = torch.device(device), num_layers
        self.max_length, self.batch_size = max_length, batch_size

    @torch.no_grad()
    def _embed(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt").to(self.device)
        hidden = self.model(**enc, output_hidden_states=True).hidden_states
        out = hidden[self.num_layers if self.num_layers is not None else -1]
        out = out / out.norm(dim=-1, keepdim=True)
        mask = enc["attention_mask"].clone().float()
        mask[:, 0] = 0  # [CLS]
        mask[torch.arange(mask.shape[0]), enc["attention_mask"].sum(1) - 1] = 0  # [SEP]
        return out * mask.unsqueeze(-1), mask

    @torch.no_grad()
    def f1(self, preds: list[str], refs: list[str]) -> torch.Tensor:
        """F1 of each pair ``(preds[i], refs[i])``, on the CPU."""
        if len(preds) != len(refs):
            raise ValueError(f"{len(preds)} predictions but {len(refs)} references; give one reference per prediction")
        scores = []
        for i in range(0, len(preds), self.batch_size):
            p, pm = self._embed(preds[i:i + self.batch_size])
            r, rm = self._embed(refs[i:i + self.batch_size])
            sim = torch.einsum("bpd,brd->bpr", p, r)  # zero rows/columns for special and padding tokens
            precision = (sim.max(dim=2).values * pm).sum(1) / pm.sum(1)
            recall = (sim.max(dim=1).values * rm).sum(1) / rm.sum(1)
            f1 = 2 * precision * recall / (precision + recall)
            scores.append(f1.nan_to_num(0.0).cpu())
        return torch.cat(scores) if scores else torch.zeros(0)
