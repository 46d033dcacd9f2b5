"""hsd-lightning: fine-tune causal LMs and decode them with layer-skipping decoders. See README.md."""
from hsd_lightning.cli import run_cli

if __name__ == "__main__":
    run_cli()
