"""Paired bootstrap of R-L between two runs on the same inputs (evaluation/bootstrap.py)."""
import json

import pytest

from hsd_lightning.evaluation.bootstrap import compare, main, paired_bootstrap, per_input_rouge_l
from hsd_lightning.evaluation.metrics import GenerationScores

REFS = [["A man sharpens a knife."], ["The dog runs in the park.", "A dog is running."], ["Kids play football."]]


def _run(folder, preds):
    folder.mkdir(parents=True)
    lines = [json.dumps({"id": f"t-{i}", "prediction": p, "references": r}) for i, (p, r) in enumerate(zip(preds, REFS))]
    (folder / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_mean_of_per_input_scores_is_the_tables_rouge_l(tmp_path):
    preds = ["a man sharpening knives", "A dog is running fast.", "football"]
    run = _run(tmp_path / "a", preds)
    per = per_input_rouge_l({f"t-{i}": {"prediction": p, "references": r} for i, (p, r) in enumerate(zip(preds, REFS))})
    scores = GenerationScores(bertscore=False)
    scores.update([{"prediction": p, "references": r, "layers_per_token": [30, 30], "generated_tokens": 1,
                    "generation_seconds": 1.0} for p, r in zip(preds, REFS)])
    assert sum(per.values()) / 3 == pytest.approx(scores.compute()["rougeL"], abs=1e-6)
    r = compare(run, run, samples=200)
    assert (r["diff"], r["diff_lo"], r["diff_hi"], r["ratio"], r["p_a_higher"]) == (0, 0, 0, 100, 0)


def test_interval_of_a_constant_shift_is_the_shift():
    a = [10.0, 20.0, 30.0, 40.0]
    r = paired_bootstrap([x + 5 for x in a], a, samples=500, seed=1)
    assert r["diff"] == r["diff_lo"] == r["diff_hi"] == pytest.approx(5)
    assert r["p_a_higher"] == 1 and r["ratio_lo"] <= r["ratio"] <= r["ratio_hi"]
    assert paired_bootstrap(a, a[::-1], samples=300, seed=2) == paired_bootstrap(a, a[::-1], samples=300, seed=2)


def test_mismatched_runs_are_named(tmp_path, capsys):
    a = _run(tmp_path / "a", ["x", "y", "z"])
    b = tmp_path / "b"
    b.mkdir()
    (b / "predictions.jsonl").write_text(json.dumps({"id": "t-9", "prediction": "x", "references": ["x"]}) + "\n")
    with pytest.raises(ValueError, match=r"hold different inputs \(4 ids in one only.*same test inputs"):
        compare(a, b)
    with pytest.raises(ValueError, match="two non-empty lists of equal length, got 2 and 1"):
        paired_bootstrap([1.0, 2.0], [1.0])
    with pytest.raises(SystemExit):
        main([str(a), str(tmp_path / "missing")])
    assert "is neither a predictions file nor a sweep folder" in capsys.readouterr().err


def test_a_reports_predictions_file_takes_the_references_of_the_other_run(tmp_path):
    preds = ["a man sharpening knives", "A dog is running fast.", "football"]
    run = _run(tmp_path / "a", preds)
    committed = tmp_path / "vanilla.jsonl"  # as the report commits them: no references
    committed.write_text("".join(json.dumps({"id": f"t-{i}", "input": "x", "prediction": p}) + "\n"
                                 for i, p in enumerate(preds[::-1])))
    both = compare(run, committed, samples=100)
    by_hand = per_input_rouge_l({f"t-{i}": {"prediction": p, "references": r}
                                 for i, (p, r) in enumerate(zip(preds[::-1], REFS))})
    assert both["mean_b"] == pytest.approx(sum(by_hand.values()) / 3)
    with pytest.raises(ValueError, match="holds no references for 't-0' and neither does the other run"):
        compare(committed, committed)
