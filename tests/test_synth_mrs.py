"""scripts/experiments/synth_mrs.py: MRs from a split's slots and values in new combinations, none that a split holds."""
import csv
import importlib.util
import json
from pathlib import Path

import pytest

from hsd_lightning.evaluation.slots import SLOTS, parse_mr

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "experiments" / "synth_mrs.py"
TRAIN = ["name[Aromi], eatType[coffee shop], food[Chinese], area[city centre]",
         "name[Cotto], eatType[pub], priceRange[cheap], familyFriendly[yes], near[The Bakers]",
         "name[Aromi], customer rating[low], area[riverside], familyFriendly[no]"]
TEST = ["name[Cotto], eatType[pub], food[Chinese], area[riverside]"]


def _script():
    spec = importlib.util.spec_from_file_location("synth_mrs", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def data(tmp_path, monkeypatch):
    root = tmp_path / "data" / "e2e"
    root.mkdir(parents=True)
    for split, mrs in (("trainset", TRAIN), ("devset", TRAIN[:1]), ("testset_w_refs", TEST)):
        with (root / f"{split}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["mr", "ref"])
            w.writerows([m, "a reference"] for m in mrs)
    monkeypatch.setenv("HSD_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def test_sampled_mrs_are_new_and_use_the_splits_values(data):
    out = data / "mrs.jsonl"
    _script().main(["--split", "trainset", "--n", "30", "--seed", "3", "--out", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len({r["mr"] for r in rows}) == 30 and all(r["ref"] == "" for r in rows)
    values = {}
    for m in TRAIN:
        for s, v in parse_mr(m).items():
            values.setdefault(s, set()).add(v)
    for r in rows:
        mr = parse_mr(r["mr"])
        assert r["mr"] not in TRAIN + TEST and 3 <= len(mr) <= 8
        assert all(v in values[s] for s, v in mr.items())
        assert list(mr) == [s for s in SLOTS if s in mr]  # the E2E slot order
    again = data / "again.jsonl"
    _script().main(["--split", "trainset", "--n", "30", "--seed", "3", "--out", str(again)])
    assert again.read_text() == out.read_text()
    held_out = data / "held_out.jsonl"  # a second sample shares no MR with the first
    _script().main(["--split", "trainset", "--n", "20", "--seed", "4", "--exclude", str(out), "--out", str(held_out)])
    second = {json.loads(line)["mr"] for line in held_out.read_text().splitlines()}
    assert len(second) == 20 and not second & {r["mr"] for r in rows}


def test_too_many_mrs_asked_is_one_clear_error(data):
    with pytest.raises(SystemExit, match="--n 100000: only .* new MRs found; lower --n"):
        _script().main(["--split", "devset", "--n", "100000", "--out", str(data / "x.jsonl")])
