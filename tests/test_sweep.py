"""The sweep driver: one model, many decoder rows, each written and scored in its own folder; a rerun keeps finished
rows and computes agreement with vanilla only for rows that lack it."""
import json

import pytest

from hsd_lightning.cli import CONFIG_DIR
from hsd_lightning.decoding import decoder_slug
from hsd_lightning.evaluation import agreement
from hsd_lightning.tools import sweep

ROWS = [["vanilla", {}], ["hsd", {"s": 1, "e_min": 0, "e_max": 2}], ["calm", {"d": 0.3}]]


def _run(tmp_path, fixture_dir, rows):
    sweep.main(["--config", str(CONFIG_DIR / "default.yaml"), "--model.adapter", "null",
                "--model.model_name_or_path", "tiny-llama", "--data.init_args.data_dir", str(fixture_dir),
                "--data.init_args.max_eval_samples", "3", "--data.init_args.eval_batch_size", "2",
                "--model.max_new_tokens", "4", "--model.num_beams", "1", "--trainer.callbacks.bertscore=false",
                "--trainer.logger.init_args.save_dir", str(tmp_path), "--quiet", "--out", str(tmp_path / "sweep"),
                "--decoders", json.dumps(rows)])


def _read(tmp_path, row):
    d = tmp_path / "sweep" / decoder_slug(row)  # one plain-named folder per decoder: hsd_s1_min0_max2
    return json.loads((d / "metrics.json").read_text()), (d / "predictions.jsonl").read_text()


def test_sweep_rows_agreement_and_resume(tmp_path, fixture_dir, monkeypatch):
    _run(tmp_path, fixture_dir, ROWS)
    # e_max is in layers of the model decoded (tiny-llama: 6)
    names = ["vanilla", "hsd(s=1,min=0,max=2)", "calm(d=0.3)"]
    first = {n: _read(tmp_path, n) for n in names}
    for n, (metrics, preds) in first.items():
        assert metrics["decoder"] == n and metrics["examples"] == 3 and len(preds.splitlines()) == 3
    vanilla_tokens = [json.loads(line)["token_ids"] for line in first["vanilla"][1].splitlines()]
    steps = sum(len(t) - 1 for t in vanilla_tokens)  # generated tokens 1.. are the scheduled steps
    assert first["vanilla"][0]["agreement"] == 100.0 and first["vanilla"][0]["agreement_positions"] == steps
    hsd = first["hsd(s=1,min=0,max=2)"][0]
    assert 0.0 <= hsd["agreement"] <= 100.0 and hsd["agreement_positions"] == steps
    assert "agreement" not in first["calm(d=0.3)"][0]  # CALM's plan depends on its own confidences: not static
    # the depth tool reproduces the decoded Avg. Layer from the output lengths alone (static plans)
    from hsd_lightning.decoding import build_decoder
    from hsd_lightning.evaluation.depth import average_layers

    passes = [len(json.loads(line)["layers_per_token"]) for line in first["hsd(s=1,min=0,max=2)"][1].splitlines()]
    assert average_layers(build_decoder("hsd", s=1, e_min=0, e_max=2), passes, 6, 4) == pytest.approx(hsd["avg_layer"])

    # rerun with one new row: finished rows are not decoded again, agreement runs for the new row only
    calls = []
    real = agreement.agreement_counts

    def spy(model, decoders, *args, **kwargs):
        calls.append([d.describe() for d in decoders])
        return real(model, decoders, *args, **kwargs)

    monkeypatch.setattr(agreement, "agreement_counts", spy)
    _run(tmp_path, fixture_dir, [*ROWS, ["hsd", {"s": 2, "e_min": 0, "e_max": 2}]])
    assert calls == [["hsd(s=2,min=0,max=2)"]]
    for n in names:
        assert _read(tmp_path, n) == first[n]  # same predictions, same metrics (agreement kept)
    assert _read(tmp_path, "hsd(s=2,min=0,max=2)")[0]["agreement_positions"] == steps

    # predictions, metrics and TensorBoard events of a decoder share its folder; every decoder logs the same tags
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for n in names:
        acc = EventAccumulator(str(tmp_path / "sweep" / decoder_slug(n)))
        acc.Reload()
        assert {"predict/rougeL", "predict/avg_layer"} <= set(acc.Tags()["scalars"]), n
    summary = EventAccumulator(str(tmp_path / "sweep" / "summary"))
    summary.Reload()
    assert summary.Tags()["images"] == ["quality_vs_layers"]

    # a rerun with nothing new computes nothing
    calls.clear()
    _run(tmp_path, fixture_dir, ROWS)
    assert calls == []


def test_sweep_refuses_a_config_without_scorer(tmp_path, fixture_dir):
    with pytest.raises(ValueError, match="no PredictionScorer callback; add presets/base.yaml"):
        sweep.main(["--config", str(CONFIG_DIR / "default.yaml"), "--model.adapter", "null",
                    "--model.model_name_or_path", "tiny-llama", "--data.init_args.data_dir", str(fixture_dir),
                    "--trainer.callbacks=[]", "--quiet", "--out", str(tmp_path / "sweep")])


def test_depth_by_hand():
    from hsd_lightning.decoding import build_decoder
    from hsd_lightning.evaluation.depth import average_layers

    hsd = build_decoder("hsd", s=1, e_min=0, e_max=2)
    # L=6, t_max=2: t=1 runs n=1 -> {5,6} | evens {2,4,6} = 4 layers; t=2 (and later, clamped) n=0 -> {6} | evens = 3
    assert average_layers(hsd, [4], 6, 2) == (4 + 3 + 3) / 3
    assert average_layers(hsd, [1, 2], 6, 2) == 4.0  # a one-pass output has no scheduled step
    assert average_layers(build_decoder("vanilla"), [5, 3], 6, 2) == 6.0


def test_depth_refuses_calm(tmp_path):
    from hsd_lightning.evaluation.depth import main

    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"layers_per_token": [6, 3, 3]}) + "\n")
    with pytest.raises(SystemExit, match=r"decoder 'calm\(d=0.02\)' has no static plan"):
        main([str(preds), "--num_layers", "6", "--t_max", "4", "--decoders", '[["calm", {"d": 0.02}]]'])


def test_paper_rows_are_scaled_and_printed_given_rows_are_literal(capsys):
    from hsd_lightning.tools.sweep import PAPER_ROWS, paper_decoders

    scaled = [d.describe() for d in paper_decoders(30, PAPER_ROWS)]
    assert "hsd(s=1,min=0,max=10)" in scaled and "skipdecode(min=8,max=20)" in scaled  # E_max 12 / (10, 24) of 36
    literal = paper_decoders(30, [["hsd", {"s": 1, "e_min": 0, "e_max": 12}]], paper_depth=None)
    assert [d.describe() for d in literal] == ["hsd(s=1,min=0,max=12)"]  # as predict --decoder.e_max 12 runs it
