"""scripts/experiments/seqkd_pairs.py: self-distilled E2E pairs, and --honest swapping outputs that drop a slot."""
import csv
import importlib.util
import json
from pathlib import Path

import pytest

from hsd_lightning.data.datamodule import E2EDataModule

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "experiments" / "seqkd_pairs.py"
A = "name[The Golden Pear], food[Italian], area[city centre]"
B = "name[Blue Lantern], food[Chinese], area[riverside]"
C = "name[The Copper Kettle], food[French], area[riverside]"  # E2E food values only: the matcher knows those
OUTPUTS = {A: "The Golden Pear is in the city centre.",                 # food missed
           B: "Blue Lantern serves Chinese food in the riverside.",    # every slot said
           C: "The Copper Kettle is a restaurant serving French food in the riverside."}  # only adds eatType
REFS = [(A, "The Golden Pear is in the city centre."),                  # drops food too: never chosen
        (A, "The Golden Pear serves Italian food in the city centre."),
        (B, "In the riverside, Blue Lantern offers Chinese dishes."),
        (C, "The Copper Kettle serves French food in the riverside.")]


def _script():
    spec = importlib.util.spec_from_file_location("seqkd_pairs", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def predicted(tmp_path, monkeypatch):
    data = tmp_path / "data" / "e2e"
    data.mkdir(parents=True)
    for name in ("trainset.csv", "devset.csv"):
        with (data / name).open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["mr", "ref"])
            w.writerows(REFS)
    monkeypatch.setenv("HSD_DATA_DIR", str(tmp_path / "data"))
    run = tmp_path / "run"
    run.mkdir()
    template = E2EDataModule.default_template
    (run / "predictions.jsonl").write_text("".join(
        json.dumps({"prompt": template.format(source=mr), "prediction": out}) + "\n" for mr, out in OUTPUTS.items()))
    return run, tmp_path / "pairs"


def _pairs(path: Path) -> dict[str, str]:
    return {r["mr"]: r["ref"] for r in map(json.loads, path.read_text().splitlines())}


def test_pairs_are_vanilla_outputs_and_devset_is_copied(predicted, capsys):
    run, out = predicted
    _script().main([str(run), "--out", str(out / "train.jsonl")])
    assert _pairs(out / "train.jsonl") == OUTPUTS
    assert len((out / "validation.jsonl").read_text().splitlines()) == len(REFS)
    assert "3 pairs from 3 outputs" in capsys.readouterr().out


def test_honest_swaps_only_outputs_with_a_slot_missed_or_wrong(predicted, capsys):
    run, out = predicted
    _script().main([str(run), "--out", str(out / "train.jsonl"), "--honest"])
    pairs = _pairs(out / "train.jsonl")
    assert pairs[A] == "The Golden Pear serves Italian food in the city centre."  # the first slot-correct reference
    assert pairs[B] == OUTPUTS[B] and pairs[C] == OUTPUTS[C]  # an added "restaurant" alone is kept
    assert "1 with a slot missed or wrong replaced" in capsys.readouterr().out


def test_honest_names_an_mr_missing_from_the_train_file(predicted):
    run, out = predicted
    with (run / "predictions.jsonl").open("a") as f:
        f.write(json.dumps({"prompt": E2EDataModule.default_template.format(source="name[Nowhere], food[Thai]"),
                            "prediction": "Nowhere."}) + "\n")
    with pytest.raises(SystemExit, match=r"Nowhere.*--honest needs predictions of the train split"):
        _script().main([str(run), "--out", str(out / "train.jsonl"), "--honest"])


def _other_run(tmp_path: Path, outputs: dict[str, str]) -> Path:
    run = tmp_path / "other"
    run.mkdir()
    (run / "predictions.jsonl").write_text("".join(
        json.dumps({"prompt": E2EDataModule.default_template.format(source=mr), "prediction": out}) + "\n"
        for mr, out in outputs.items()))
    return run


def test_honest_from_prefers_another_runs_slot_correct_output_and_lists_the_errors(predicted, tmp_path, capsys):
    run, out = predicted
    other = _other_run(tmp_path, {A: "The Golden Pear is an Italian place in the city centre.",
                                  B: "Blue Lantern is somewhere."})  # B's own output is kept: it is not replaced
    _script().main([str(run), "--out", str(out / "train.jsonl"), "--honest", "--honest_from", str(other),
                    "--list_errors", str(out / "need.jsonl")])
    pairs = _pairs(out / "train.jsonl")
    assert pairs == {**OUTPUTS, A: "The Golden Pear is an Italian place in the city centre."}
    assert _pairs(out / "need.jsonl") == {A: OUTPUTS[A]}  # only the output with a slot missed or wrong
    assert "1 with a slot missed or wrong replaced: 1 by" in capsys.readouterr().out


def test_honest_from_falls_back_to_a_reference_when_the_other_output_drops_a_slot_too(predicted, tmp_path):
    run, out = predicted
    other = _other_run(tmp_path, {A: "The Golden Pear is a place in the city centre."})  # food missed again
    _script().main([str(run), "--out", str(out / "train.jsonl"), "--honest", "--honest_from", str(other)])
    assert _pairs(out / "train.jsonl")[A] == "The Golden Pear serves Italian food in the city centre."


def test_honest_from_needs_honest_and_a_predict_folder(predicted, tmp_path):
    run, out = predicted
    with pytest.raises(SystemExit):
        _script().main([str(run), "--out", str(out / "train.jsonl"), "--honest_from", str(run)])
    with pytest.raises(SystemExit, match=r"empty.*no predictions\*\.jsonl"):
        _script().main([str(run), "--out", str(out / "train.jsonl"), "--honest", "--honest_from", str(tmp_path / "empty")])
