"""scripts/experiments/onpolicy_pairs.py: the plans' own faulty outputs, as many fault-free ones, the rest targets."""
import importlib.util
import json
from pathlib import Path

import pytest

from hsd_lightning.data.datamodule import E2EDataModule

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts" / "experiments"
A = "name[The Golden Pear], food[Italian], area[city centre]"
B = "name[Blue Lantern], food[Chinese], area[riverside]"
C = "name[The Copper Kettle], food[French], area[riverside]"
ROLLOUTS = [  # (MR, output, references)
    (A, "The Golden Pear is in the city centre.", ["The Golden Pear serves Italian food in the city centre."]),  # food missed
    (B, "Blue Lantern serves Chinese food in the riverside area in the riverside area.",                     # repeat
     ["Blue Lantern serves Chinese food in the riverside."]),
    (C, "The Copper Kettle serves French food in the riverside.", ["The Copper Kettle is French, riverside."]),
    (B, "Blue Lantern serves Chinese food in the riverside.", ["Blue Lantern serves Chinese food in the riverside."]),
    (A, "The Golden Pear serves Italian food in the city centre.", ["The Golden Pear is Italian, city centre."]),
]
TARGETS = [{"mr": C, "ref": f"target {i}"} for i in range(6)]


def _script(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))  # it reads predictions with seqkd_pairs' helpers, as a script would
    spec = importlib.util.spec_from_file_location("onpolicy_pairs", SCRIPTS / "onpolicy_pairs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def inputs(tmp_path):
    run = tmp_path / "hsd_s1"
    run.mkdir()
    template = E2EDataModule.default_template
    (run / "predictions.rank0.jsonl").write_text("".join(
        json.dumps({"prompt": template.format(source=mr), "prediction": out, "references": refs}) + "\n"
        for mr, out, refs in ROLLOUTS))
    targets = tmp_path / "stage" / "train.jsonl"
    targets.parent.mkdir()
    targets.write_text("".join(json.dumps(t) + "\n" for t in TARGETS))
    (targets.parent / "validation.jsonl").write_text(json.dumps({"mr": A, "ref": "dev"}) + "\n")
    return run, targets, tmp_path / "out" / "train.jsonl"


def test_every_faulty_rollout_as_many_clean_ones_and_targets_fill_the_rest(inputs, monkeypatch, capsys):
    run, targets, out = inputs
    _script(monkeypatch).main([str(run), "--targets", str(targets), "--rows", "7", "--out", str(out), "--seed", "1"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    texts = [r["ref"] for r in rows]
    assert len(rows) == 7
    assert ROLLOUTS[0][1] in texts and ROLLOUTS[1][1] in texts  # both faulty rollouts, always
    assert sum(t in {r[1] for r in ROLLOUTS[2:]} for t in texts) == 2  # as many fault-free ones
    assert sum(t.startswith("target ") for t in texts) == 3  # the rest from the stage's targets
    assert {r["mr"] for r in rows if r["ref"] == ROLLOUTS[1][1]} == {B}  # the rollout keeps its own MR
    assert (out.parent / "validation.jsonl").read_text() == (targets.parent / "validation.jsonl").read_text()
    assert "2 faulty rollouts (of 2), 2 fault-free ones (of 3), 3 lines of" in capsys.readouterr().out


def test_too_few_rows_for_the_rollouts_is_one_line_that_names_the_fix(inputs, monkeypatch):
    run, targets, out = inputs
    with pytest.raises(SystemExit, match=r"--rows 3 is fewer than the 4 rollouts to keep \(all 2 faulty and 2 "
                                         r"fault-free\); raise --rows"):
        _script(monkeypatch).main([str(run), "--targets", str(targets), "--rows", "3", "--out", str(out)])
    assert not out.exists()


def test_clean_all_keeps_every_fault_free_rollout(inputs, monkeypatch, capsys):
    run, targets, out = inputs
    _script(monkeypatch).main([str(run), "--targets", str(targets), "--rows", "6", "--out", str(out), "--clean", "all"])
    texts = [json.loads(line)["ref"] for line in out.read_text().splitlines()]
    assert sorted(t for t in texts if not t.startswith("target ")) == sorted(r[1] for r in ROLLOUTS)
    assert "2 faulty rollouts (of 2), 3 fault-free ones (of 3), 1 lines of" in capsys.readouterr().out


def test_a_rollout_without_references_is_faulted_for_any_repeat(monkeypatch):
    """synth_mrs.py's MRs have no reference: a repeat there has nothing to excuse it, and still counts."""
    faulty = _script(monkeypatch).faulty
    prompt = E2EDataModule.default_template.format(source=B)
    assert faulty({"prompt": prompt, "prediction": ROLLOUTS[1][1], "references": []})
    assert not faulty({"prompt": prompt, "prediction": ROLLOUTS[3][1], "references": []})


def test_rollouts_caps_them_half_faulty_half_clean(inputs, monkeypatch, capsys):
    run, targets, out = inputs
    _script(monkeypatch).main([str(run), "--targets", str(targets), "--rows", "5", "--out", str(out), "--rollouts", "2"])
    texts = [json.loads(line)["ref"] for line in out.read_text().splitlines()]
    assert sum(t in (ROLLOUTS[0][1], ROLLOUTS[1][1]) for t in texts) == 1
    assert sum(t in {r[1] for r in ROLLOUTS[2:]} for t in texts) == 1
    assert sum(t.startswith("target ") for t in texts) == 3
    with pytest.raises(SystemExit, match=r"--rollouts 6 needs 3 faulty and 3 fault-free rollouts; these runs have 2 "
                                         r"and 3: lower --rollouts"):
        _script(monkeypatch).main([str(run), "--targets", str(targets), "--rows", "9", "--out", str(out),
                                   "--rollouts", "6"])
