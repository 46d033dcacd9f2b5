"""``hsd-lightning`` / ``python -m hsd_lightning``: the LightningCLI subcommands and the tools, under one command.

    hsd-lightning fit|validate|test|predict ...     the LightningCLI of main.py (same flags, same configs)
    hsd-lightning sweep --config C --out DIR ...     decode one checkpoint with many decoders (model loaded once)
    hsd-lightning report DIR ...                     the paper-style table, CSV and plots of sweep/predict folders
    hsd-lightning bench --model M --out DIR          decoding speed per decoder (ratios measured in one run)
    hsd-lightning <tool> --help                      each tool's own options

Tools are imported only when named, so ``--help`` stays fast.
"""
from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = ("fit", "validate", "test", "predict")
# tool name -> (module with a ``main(argv)``, one line for the overview)
TOOLS = {
    "sweep": ("hsd_lightning.tools.sweep", "decode one checkpoint under many decoders, the model loaded once"),
    "report": ("hsd_lightning.evaluation.report", "turn run folders into the paper's table (Markdown, CSV) and plots"),
    "pages": ("hsd_lightning.evaluation.pages", "write docs/results/<task>.md and the README glance table from run summaries"),
    "bench": ("hsd_lightning.benchmark.speed", "decoding speed per decoder, as ratios measured in one run"),
    "bench-train-step": ("hsd_lightning.benchmark.train_step", "cost of one skip-aware training step against a standard one"),
    "export-adapter": ("hsd_lightning.tools.export_adapter", "export a LoRA checkpoint as a PEFT adapter folder with a model card"),
    "targets": ("hsd_lightning.evaluation.targets", "check the skip-aware targets on run summaries"),
    "bootstrap": ("hsd_lightning.evaluation.bootstrap", "paired bootstrap intervals between two runs' predictions"),
    "depth": ("hsd_lightning.evaluation.depth", "average layers a plan runs on given outputs, per t_max"),
    "fidelity": ("hsd_lightning.tools.fidelity", "add repetition, length and E2E slot errors to committed runs"),
    "rescore": ("hsd_lightning.evaluation.rescore", "recompute a run's metrics.json from its predictions"),
    "data-stats": ("hsd_lightning.data.stats", "token lengths of a dataset's sources and targets"),
}


def usage() -> str:
    width = max(map(len, TOOLS))
    lines = ["usage: hsd-lightning {fit,validate,test,predict} [--config FILE] [options]   (LightningCLI; --help)",
             "       hsd-lightning TOOL [options]                                         (TOOL --help)", "",
             "tools:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in TOOLS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    name = argv[0]
    if name in SUBCOMMANDS or name.startswith("-"):  # LightningCLI (also `hsd-lightning --print_config ...`)
        from .cli import run_cli

        sys.argv = [sys.argv[0]] + argv  # the DDP launcher restarts the other ranks from sys.argv
        run_cli(argv)
        return
    if name not in TOOLS:
        raise SystemExit(f"hsd-lightning: unknown command {name!r}; use one of {', '.join(SUBCOMMANDS + tuple(TOOLS))}"
                         " (hsd-lightning --help lists them)")
    module = importlib.import_module(TOOLS[name][0])
    sys.argv = [f"hsd-lightning {name}"] + argv[1:]  # argparse's usage line names the command as typed
    module.main(argv[1:])


if __name__ == "__main__":
    main()
