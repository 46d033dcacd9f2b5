"""LightningCLI entry point: ``python main.py {fit,validate,test,predict} --config ... [--decoder NAME ...]``."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import yaml
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from .data import TextGenDataModule
from .decoding import DECODERS, Decoder, build_decoder, decoder_slug
from .library_noise import drop_library_noise
from .models.module import CausalLMModule
from .training.checkpoint import read_checkpoint
from .training.precision import cpu_bf16_warning
from .training.resume import resolve_last

CONFIG_DIR = (Path(__file__).resolve().parent / "configs").resolve()  # the checkout's configs/ (linked), or the wheel's copy
BASE_PRESET = CONFIG_DIR / "presets" / "base.yaml"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"
SUBCOMMANDS = ("fit", "validate", "test", "predict")


class HSDArgumentParser(LightningArgumentParser):
    """Writes configs without ``compose:`` (``--print_config``, the run folder's ``config.yaml``): by then every
    composed file is merged into the values, and relative ``compose`` paths would not load from another folder."""

    def dump(self, cfg, *args, **kwargs):
        if "compose" in cfg and cfg.get("compose") is not None:
            cfg = cfg.clone()
            cfg["compose"] = None
        return super().dump(cfg, *args, **kwargs)


def _checkpoint_decoder(path: str | None) -> str | None:
    """The decoder a checkpoint was saved with (``predict`` uses it when no --decoder is given), read lazily."""
    if not path or not Path(str(path)).is_file():
        return None
    try:
        import torch

        saved = torch.load(path, map_location="cpu", mmap=True, weights_only=True).get("decoder")
        return build_decoder(**saved).describe() if saved else None
    except Exception:  # an unreadable file fails later with its own message; the folder name is not worth one
        return None


def name_run_folder(trainer, model, subcommand: str, ckpt_path: str | None) -> None:
    """``predict``/``test`` write into ``<save_dir>/<name>/<subcommand>_<decoder>`` (``predict_hsd_s1_min0_max10``,
    then ``..._v1`` ...): one folder per run holding its predictions, metrics and TensorBoard events, named for the
    decoder, when the logger's version is not set by the user. DDP ranks started later take rank 0's name."""
    logger = trainer.logger
    if not isinstance(logger, TensorBoardLogger) or logger._version is not None:
        return
    root = Path(logger.root_dir)
    inherited = os.environ.get("HSD_RUN_VERSION", "")
    if os.environ.get("LOCAL_RANK") and inherited.startswith(f"{root}{os.pathsep}"):
        logger._version = inherited.rsplit(os.pathsep, 1)[1]
        return
    described = model.decoder.describe() if model.decoder_pinned else _checkpoint_decoder(ckpt_path) or \
        model.decoder.describe()
    base = f"{subcommand}_{decoder_slug(described)}"
    version, n = base, 0
    while (root / version).exists():
        n += 1
        version = f"{base}_v{n}"
    logger._version = version
    os.environ["HSD_RUN_VERSION"] = f"{root}{os.pathsep}{version}"


# --ckpt_path and the model's settings (documented in docs/guide.md, "Settings given with --ckpt_path"):
DECODE_KEYS = ("decoder", "num_beams", "max_new_tokens", "t_max", "generation_kwargs")  # always as given
WEIGHT_KEYS = ("model_name_or_path", "finetune", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "dtype",
               "adapter")  # define the weights a checkpoint holds: must match it
OPTIMIZER_KEYS = ("learning_rate", "weight_decay")  # live in the optimizer state a resumed fit restores: must match
# every other setting (the plans, warm-up, decay, seeds ...) is computed anew each step: as given for fit, and the
# checkpoint's for validate/test/predict (they do not read them)


def checkpoint_settings(subcommand: str, given: dict, saved: dict) -> dict:
    """The model settings to take from a checkpoint's ``hyper_parameters`` over the parsed ones. A setting given
    (differing from its default) that differs from the saved one is refused when the checkpoint fixes it."""
    import inspect

    defaults = {k: p.default for k, p in inspect.signature(CausalLMModule.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}
    fixed = WEIGHT_KEYS + (OPTIMIZER_KEYS if subcommand == "fit" else ())
    take = {}
    for key, value in saved.items():
        if key not in given or key in DECODE_KEYS or given[key] == value:
            continue
        typed = any(a == f"--model.{key}" or a.startswith(f"--model.{key}=") for a in sys.argv[1:])
        is_given = typed or given[key] != defaults.get(key, given[key])
        if is_given and key in fixed:
            why = ("a resumed fit restores its optimizer state" if key in OPTIMIZER_KEYS else
                   "it defines the weights the checkpoint holds")
            fix = ("drop the flag, or start a new run from these weights with --model.init_weights <ckpt>"
                   if key in OPTIMIZER_KEYS else "drop the flag, or give a checkpoint trained with it")
            raise ValueError(f"--model.{key}={given[key]!r} differs from the checkpoint's {value!r}: {why}; {fix}")
        if not is_given or subcommand != "fit":
            take[key] = value
    return take


class HSDCLI(LightningCLI):
    def add_arguments_to_parser(self, parser):
        # --decoder NAME (+ --decoder.ARG) for predict/test; it wins over the decoder saved in a checkpoint
        parser.add_subclass_arguments(Decoder, "decoder", required=False,
                                      help="vanilla | skipdecode | hsd | calm, e.g. --decoder hsd --decoder.s 1")
        parser.link_arguments("model.model_name_or_path", "data.init_args.tokenizer")
        parser.add_argument("--compose", type=Optional[list[str]], default=None,
                            help="in a config file: the config files it is made of (relative to it), loaded first")

    def setup_parser(self, add_subcommands, main_kwargs, subparser_kwargs):
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        if not add_subcommands:  # the tools (sweep, export-adapter) load a config a fit run saved, which holds
            # its subcommand's keys: accept them; the tools take their checkpoint as their own --ckpt_path
            self.parser.add_argument("--ckpt_path", type=Optional[str], default=None, help="ignored here")
            self.parser.add_argument("--weights_only", type=Optional[bool], default=None, help="ignored here")

    def _parse_ckpt_path(self):
        """Lightning's version lays every hyper-parameter saved in the checkpoint over the parsed config, so flags
        given with ``--ckpt_path`` were silently dropped. Here: ``--ckpt_path last`` is resolved first (the newest
        readable checkpoint of the run), then each model setting follows ``checkpoint_settings``."""
        sub = self.config.get("subcommand")
        if not sub:
            return
        note = resolve_last(self.config[sub], sub)  # --ckpt_path last: the killed run, not the new empty one
        if note:
            rank_zero_info(note)
        path = self.config[sub].get("ckpt_path")
        if not path:
            return
        saved = read_checkpoint(path).get("hyper_parameters") or {}
        model = self.config[sub]["model"]
        for key, value in checkpoint_settings(sub, dict(model), saved).items():
            model[key] = value


    def instantiate_classes(self):
        super().instantiate_classes()
        cfg = self.config_init[self.subcommand] if self.subcommand else self.config_init
        decoder = cfg.get("decoder")
        if decoder is not None:
            self.model.use_decoder(decoder)
        note = cpu_bf16_warning(self.trainer.precision, isinstance(self.trainer.accelerator, CPUAccelerator))
        if note:
            rank_zero_warn(note)
        if self.subcommand in ("predict", "test"):
            name_run_folder(self.trainer, self.model, self.subcommand, cfg.get("ckpt_path"))


def _rewrite_decoder_names(args: list[str]) -> list[str]:
    """Let users write ``--decoder hsd``: map short names to the class paths jsonargparse expects; a name that is
    neither a decoder nor a dotted class path is refused with the valid names."""
    out = list(args)
    for i, a in enumerate(out):
        for flag in ("--decoder", "--model.decoder"):
            value = out[i + 1] if a == flag and i + 1 < len(out) else a.split("=", 1)[1] if a.startswith(flag + "=") \
                else None
            if value is None:
                continue
            if value.lower() in DECODERS:
                cls = DECODERS[value.lower()]
                path = f"{cls.__module__.rsplit('.', 1)[0]}.{cls.__name__}"
                if a == flag:
                    out[i + 1] = path
                else:
                    out[i] = f"{flag}={path}"
            elif "." not in value and not value.startswith(("{", "-")) and value.lower() not in ("null", "none"):
                raise ValueError(f"{flag} {value!r} is not a decoder; choose one of {', '.join(DECODERS)}")
    return out


def _quote_templates(args: list[str]) -> list[str]:
    """``--data.init_args.prompt_template "Q: {source}"`` stays a string: jsonargparse reads a command-line value as
    YAML, where ``{source}`` is a mapping, so the template is handed over as a quoted (JSON) string. Idempotent."""
    import json

    out = list(args)
    for i, a in enumerate(out):
        flag, eq, value = a.partition("=")
        if not flag.startswith("--data.") or not flag.endswith(".prompt_template"):
            continue
        if eq and not value.startswith('"'):
            out[i] = f"{flag}={json.dumps(value)}"
        elif not eq and i + 1 < len(out) and not out[i + 1].startswith('"') and out[i + 1] not in ("null", "None"):
            out[i + 1] = json.dumps(out[i + 1])
    return out


def _composition(path: Path, seen: tuple = ()) -> list[Path]:
    """The files a config is made of, in load order, itself last (``compose: [models/x.yaml, data/y.yaml]``)."""
    if path in seen:
        raise ValueError(f"config {path} composes itself (through {[str(p) for p in seen]}); remove the cycle")
    try:
        data = yaml.safe_load(path.read_text()) if path.is_file() else None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValueError(f"config {path} is not valid YAML{where}: {getattr(err, 'problem', None) or err}; fix the "
                         "file") from None
    parts = data.get("compose") if isinstance(data, dict) else None
    out: list[Path] = []
    for part in parts or []:
        out += _composition(path.parent / part, seen + (path,))
    return out + [path]


def _expand_compose(args: list[str]) -> list[str]:
    """``--config cell.yaml`` -> ``--config <each file it composes> --config cell.yaml``. Written by hand because
    jsonargparse has no include: a cell of the paper's grid stays one file (model file + task file + its own keys)
    while the model and task settings live once. Idempotent (a relaunched DDP rank re-reads the expanded argv)."""
    out: list[str] = []
    i = 0
    while i < len(args):
        flag, value, step = args[i], None, 1
        if flag in ("--config", "-c") and i + 1 < len(args):
            value, step = args[i + 1], 2
        elif flag.startswith("--config="):
            value = flag.split("=", 1)[1]
        if value is not None:
            before = [x for p in _composition(Path(value))[:-1] for x in ("--config", str(p))]
            if before and out[-len(before):] != before:
                out += before
        out += args[i:i + step]
        i += step
    return out


def _parser_kwargs(run: bool, one_line_errors: bool) -> dict:
    # one_line_errors: raise instead of printing the usage block (run_cli prints the one line), on every parser
    errors = {"exit_on_error": False} if one_line_errors else {}
    base = {"default_config_files": [str(BASE_PRESET)], **errors}
    return {**errors, **{sub: dict(base) for sub in SUBCOMMANDS}} if run else base  # copies: Lightning sets keys


def cli_main(args: list[str] | None = None, run: bool = True, one_line_errors: bool = False) -> HSDCLI:
    drop_library_noise()
    args = list(sys.argv[1:] if args is None else args)
    args = _expand_compose(_quote_templates(_rewrite_decoder_names(args)))
    # the embedded default: no --config given -> configs/default.yaml (SmolLM2-135M on E2E, CPU-sized)
    # ``-c`` is ``--config``: a config given either way replaces the default, it is not layered over it
    if args and args[0] in SUBCOMMANDS and not any(a in ("--config", "-c") or a.startswith("--config=") for a in args) \
            and not any(a in ("-h", "--help") for a in args):
        args = [args[0], "--config", str(DEFAULT_CONFIG)] + args[1:]
    # the CLI reads the (rewritten) arguments from sys.argv, not from ``args=``: Lightning's DDP launcher starts the
    # other ranks with ``sys.argv``, so it must hold this very command line while the run lasts (the rewrite above is
    # idempotent, so a relaunched rank parses the same configuration)
    argv, sys.argv = sys.argv, [sys.argv[0], *args]
    try:
        return HSDCLI(CausalLMModule, TextGenDataModule, subclass_mode_data=True, run=run,
                      parser_class=HSDArgumentParser,
                      parser_kwargs=_parser_kwargs(run, one_line_errors),
                      save_config_kwargs={"overwrite": True}, seed_everything_default=42)
    finally:
        sys.argv = argv


# what a user can cause and fix: printed as one line (exit 2) by the commands; HSD_DEBUG=1 shows the traceback
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, MemoryError)


def one_line(err: BaseException) -> str:
    """The message a user needs: jsonargparse wraps a class's own error in "Does not validate against any of the
    Union subtypes ..."; the class's line is the one that says what is wrong."""
    text = str(err).strip()
    if "Does not validate against any of the Union subtypes" in text or "Problem with given class_path" in text:
        lines = [x.strip()[2:].strip() for x in text.splitlines() if x.strip().startswith("- ")]
        mine = [x for x in lines if not x.startswith(("Expected a", "Problem with given class_path", "Parser key"))]
        if mine:
            return mine[0]
    return " ".join(line.strip() for line in text.splitlines() if line.strip()) or type(err).__name__


def run_cli(argv: list[str] | None = None) -> None:
    """The command-line entry (``main.py``, ``hsd-lightning``): an expected user error prints one line and exits 2."""
    from jsonargparse import ArgumentError
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    try:
        cli_main(argv, one_line_errors=True)
    except SIGTERMException as err:  # Lightning's SystemExit(0): a killed run must not look finished
        saved = getattr(err, "saved_checkpoint", None)
        sys.stderr.write(f"stopped by SIGTERM at step {getattr(err, 'global_step', '?')}"
                         + (f"; saved {saved}: resume with --ckpt_path last\n" if saved else "\n"))
        raise SystemExit(143) from None
    except (*USER_ERRORS, ArgumentError) as err:
        if os.environ.get("HSD_DEBUG") == "1":
            raise
        sys.stderr.write(f"error: {one_line(err)}\n")
        raise SystemExit(2) from None
