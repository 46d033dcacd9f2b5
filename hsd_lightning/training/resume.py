"""Runs that survive: ``fit --ckpt_path last`` finds the run it continues, and a resumed run continues exactly.

Lightning restores weights, optimizer, scheduler and loop counters, and the batch order through a stateful training
loader (``torchdata``'s ``StatefulDataLoader``, see ``data/datamodule.py``). Two pieces it leaves to us:
- ``--ckpt_path last`` looks for ``last.ckpt`` in the *new* run's folder (a logger starts a new ``version_N`` per run),
  so it would never find the killed run's checkpoint; :func:`resolve_last` looks through the earlier versions and
  points the logger back at the version it resumes, so logs and checkpoints stay in one folder;
- random number generators (dropout) are not in the checkpoint; :func:`rng_state` / :func:`set_rng_state` carry them
  (applied by the module at the first training batch after a restore, once the loaders have been set up).
"""
from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import torch

# last.ckpt (written at each validation and at the end of fit) and latest-step=N.ckpt (every N steps, presets/base.yaml)
LAST_NAMES = re.compile(r"(last|latest-step=\d+)(-v\d+)?")


def find_last_checkpoint(save_dir: str, name: str) -> tuple[Path, str, list[Path]] | None:
    """The newest *readable* last/latest checkpoint under ``<save_dir>/<name>/<version>/checkpoints``, its version
    folder name, and the newer ones skipped because they do not load (a save cut short by a kill)."""
    from .checkpoint import is_readable

    found = sorted((p for p in Path(save_dir, name).glob("*/checkpoints/*.ckpt") if LAST_NAMES.fullmatch(p.stem)),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    broken = []
    for path in found:
        if is_readable(path):
            return path, path.parent.parent.name, broken
        broken.append(path)
    return None


def resolve_last(config, subcommand: str = "fit") -> str | None:
    """``--ckpt_path last``: rewrite ``config.ckpt_path`` to the newest readable last checkpoint of this logger's run
    name (Lightning alone would look in the new run's empty folder). For ``fit`` the logger's version becomes that
    run's folder (logs continue there) and no checkpoint means a fresh start; ``validate``/``test``/``predict``
    without one is an error (they would decode untrained weights). Returns a line saying what was chosen."""
    if config.get("ckpt_path") != "last":
        return None
    logger = config.trainer.get("logger")
    args = getattr(logger, "init_args", None)
    if args is None or "save_dir" not in args:
        if subcommand != "fit":
            raise ValueError(f"{subcommand} --ckpt_path last: no logger folder to look in; give the checkpoint's path")
        return None  # no logger folder to look through: Lightning's own lookup applies
    name = args.get("name") or "lightning_logs"
    hit = find_last_checkpoint(args.save_dir, name)
    if hit is None:
        if subcommand != "fit":
            raise FileNotFoundError(f"{subcommand} --ckpt_path last: no readable last checkpoint under "
                                    f"{Path(args.save_dir, name)}; train first (fit) or give the checkpoint's path")
        config.ckpt_path = None  # nothing to resume: a fresh run (Lightning would warn that "last" was not found)
        return (f"fit --ckpt_path last: no last checkpoint under {Path(args.save_dir, name)}; "
                "starting from the first step")
    path, version, broken = hit
    config.ckpt_path = str(path)
    skipped = f"; skipped {len(broken)} newer unreadable ({', '.join(p.name for p in broken)})" if broken else ""
    if subcommand != "fit":
        return f"{subcommand} --ckpt_path last: {path}{skipped}"
    args.version = int(version.split("_", 1)[1]) if re.fullmatch(r"version_\d+", version) else version
    return f"fit --ckpt_path last: resuming {path} (logs continue in {path.parent.parent}){skipped}"


def rng_state() -> dict:
    """Tensors and plain Python values only: Lightning loads checkpoints with ``weights_only=True``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def start_next_epoch_fresh(checkpoint: dict) -> None:
    """A checkpoint written after its epoch ended (``last.ckpt`` at the end of a fit that reached ``max_epochs`` and
    ``max_steps`` at once) still holds that epoch's position: the epoch loop's per-epoch batch count at the full
    epoch with ``is_last_batch``, and the training loader's state with every batch yielded. Restored as it is, the
    next epoch looks finished before it starts and counts as done, so a run continued with ``max_epochs`` one higher
    trained 0 steps (our CommonGen third epoch). Here such a checkpoint restores as the start of a new epoch: the
    per-epoch counters at 0 (as Lightning resets them when an epoch begins) and the loader state marked finished,
    which makes ``StatefulDataLoader`` start a new pass. Checkpoints written inside an epoch are left as they are."""
    loop = checkpoint.get("loops", {}).get("fit_loop", {})
    epochs = loop.get("epoch_progress", {}).get("current", {})
    if not epochs:
        return
    batches = loop.get("epoch_loop.batch_progress")
    if epochs.get("completed", 0) < epochs.get("started", 0):
        # saved after the epoch's last batch but before the epoch was marked done (last.ckpt at the end-of-epoch
        # validation of a fit that stopped at max_epochs): Lightning closes that epoch on restore and starts the
        # next, but the loader's restored state says its pass is over, so the next epoch had no batches (a finished
        # run continued with a larger max_steps trained 0 steps). Such an epoch is over: restore it as a finished one.
        if not (batches and batches.get("is_last_batch")):
            return
        for counts in (loop["epoch_progress"]["current"], loop["epoch_progress"].get("total", {})):
            counts["completed"] = counts.get("started", 0)
    if batches:
        batches["current"] = {k: 0 for k in batches["current"]}
        batches["is_last_batch"] = False
    _finish_loader_pass(loop)


def _finish_loader_pass(loop: dict) -> None:
    for state in loop.get("state_dict", {}).get("combined_loader", None) or []:
        if isinstance(state, dict) and "_iterator_finished" in state:
            state["_iterator_finished"] = True
