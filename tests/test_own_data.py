"""Your own data: TextPairDataModule reads CSV/JSONL pairs with named fields, several references, inputs without one;
the README's worked example (examples/capitals, configs/smollm2_pairs.yaml) runs fit -> predict -> report."""
import json
import subprocess
import sys

import pytest

from hsd_lightning.cli import CONFIG_DIR, cli_main
from hsd_lightning.data import TextGenDataModule, TextPairDataModule

ROOT = CONFIG_DIR.parent
EXAMPLE = ROOT / "examples" / "capitals"
TINY_PLANS = '[{"name": "vanilla"}, {"name": "hsd", "s": 1, "e_max": 3}]'


def _dm(**kw):
    args = dict(tokenizer="tiny-gpt2", train_file=str(EXAMPLE / "train.csv"), validation_file=str(EXAMPLE / "dev.csv"),
                test_file=str(EXAMPLE / "test.jsonl"), source_field="question", target_field="answer", name="capitals")
    return TextPairDataModule(**{**args, **kw})


def test_reads_csv_and_jsonl_with_named_fields_multi_reference_and_no_reference():
    dm = _dm()
    train = dm.dataset_for("train", "train")
    assert len(train) == 24
    test = dm.dataset_for("test", "generate")
    assert test["id"] == [f"capitals-test-{k}" for k in range(4)]
    assert test["references"][0] == ["The capital of Thailand is Bangkok.", "Bangkok is the capital of Thailand."]
    assert test["source"][3] == "What is the capital of Iceland?" and test["references"][3] == []  # decodable


def test_csv_rows_with_one_source_are_one_input_with_several_references(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("q,a\nx?,one\nx?,two\ny?,\n")
    dm = _dm(test_file=str(f), source_field="q", target_field="a")
    ds = dm.dataset_for("test", "generate")
    assert ds["source"] == ["x?", "y?"] and ds["references"] == [["one", "two"], []]


@pytest.mark.parametrize("kw,msg", [
    (dict(train_file="x.txt"), r"train_file='x.txt': use a .csv or .jsonl file"),
    (dict(source_field=""), r"source_field='': give the column/key name"),
    (dict(target_field="question"), r"source_field and target_field are both 'question'"),
])
def test_bad_settings_are_named(kw, msg):
    with pytest.raises(ValueError, match=msg):
        _dm(**kw)


def test_missing_split_file_and_base_class_are_named():
    with pytest.raises(ValueError, match=r"capitals: no test file; set data.init_args.test_file"):
        _dm(test_file=None).dataset_for("test", "generate")
    with pytest.raises(ValueError, match=r"TextGenDataModule is the base class .*TextPairDataModule"):
        TextGenDataModule(tokenizer="tiny-gpt2")


def test_worked_example_fit_predict_report(tmp_path):
    """The README's 'Your own data' commands, with a tiny model: fit, predict with HSD, then the report names the
    user's dataset and adds no paper rows; a template given on the command line stays a string."""
    common = ["--config", str(CONFIG_DIR / "smollm2_pairs.yaml"), "--model.model_name_or_path", "tiny-llama",
              "--data.init_args.data_dir", str(ROOT), "--trainer.logger.init_args.save_dir", str(tmp_path),
              "--trainer.callbacks.bertscore=false"]
    cli_main(["fit", *common, "--model.train_plans", TINY_PLANS, "--trainer.max_epochs", "1",
              "--data.init_args.prompt_template", "Q: {source}\nA:"])
    run = tmp_path / "smollm2_pairs" / "version_0"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"train/loss_step", "lr-AdamW", "val/loss"} <= set(scalars), scalars  # per step after a 3-step fit
    assert len(events.Scalars("train/loss_step")) == 3
    saved = (run / "config.yaml").read_text()
    assert "compose:" not in saved.replace("compose: null", "")  # reloadable from any folder
    ckpt = run / "checkpoints" / "last.ckpt"
    cli_main(["predict", "--config", str(run / "config.yaml"), "--ckpt_path", str(ckpt), "--decoder", "hsd",
              "--decoder.s", "1", "--decoder.e_max", "3"])
    out = tmp_path / "smollm2_pairs" / "predict_hsd_s1_min0_max3"  # one folder per run, named for the decoder
    recs = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(recs) == 4 and recs[0]["prompt"].startswith("Q: What is the capital of Thailand?\nA:")
    assert recs[3]["references"] == []
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "capitals" and metrics["examples"] == 4 and metrics["scored_examples"] == 3
    assert list(out.glob("events.out.tfevents*"))  # TensorBoard events beside the predictions
    report = subprocess.run([sys.executable, "-m", "hsd_lightning", "report", str(out), "--out", str(tmp_path / "rep"),
                             "--examples", "4"], capture_output=True, text=True, check=True).stdout
    assert "### capitals / tiny-llama" in report and "paper" not in report.lower()
    assert "What is the capital of Iceland?" in report


def test_template_quoting_is_idempotent():
    from hsd_lightning.cli import _quote_templates
    once = _quote_templates(["--data.init_args.prompt_template", "Q: {source}"])
    assert once == ["--data.init_args.prompt_template", '"Q: {source}"'] and _quote_templates(once) == once
