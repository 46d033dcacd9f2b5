"""hsd-lightning: fine-tune causal LMs and decode them with layer-skipping decoders. See README.md."""
from hsd_lightning.cli import cli_main

if __name__ == "__main__":
    cli_main()
