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
    with pytest.raises(ValueError, match=r"hold different inputs \(4 in one only.*--shared to use the 0 both"):
        compare(a, b)
    with pytest.raises(ValueError, match="share no input"):
        compare(a, b, shared=True)
    with pytest.raises(ValueError, match="two non-empty lists of equal length, got 2 and 1"):
        paired_bootstrap([1.0, 2.0], [1.0])
    with pytest.raises(SystemExit):
        main([str(a), str(tmp_path / "missing")])
    assert "is neither a predictions file nor a sweep folder" in capsys.readouterr().err


def test_a_reports_predictions_file_takes_the_references_of_the_other_run(tmp_path):
    preds = ["a man sharpening knives", "A dog is running fast.", "football"]
    srcs = ["man, knife, sharpen", "dog, park, run", "kid, football, play"]
    run = _sweep(tmp_path / "a", [(f"t-{i}", s, p, r[0]) for i, (s, p, r) in enumerate(zip(srcs, preds, REFS))])
    committed = tmp_path / "vanilla.jsonl"  # as the report commits them: the input line, no references
    committed.write_text("".join(json.dumps({"id": f"t-{i}", "input": f"Article: {s}", "prediction": p}) + "\n"
                                 for i, (s, p) in enumerate(zip(srcs, preds[::-1]))))
    both = compare(run, committed, samples=100)
    by_hand = per_input_rouge_l({f"t-{i}": {"prediction": p, "references": r[:1]}
                                 for i, (p, r) in enumerate(zip(preds[::-1], REFS))})
    assert both["mean_b"] == pytest.approx(sum(by_hand.values()) / 3)
    with pytest.raises(ValueError, match="holds no references for 'Article: man, knife, sharpen' and neither"):
        compare(committed, committed)
    # two reports' files: the references of a third run, a sweep over the same inputs
    assert compare(committed, committed, samples=10, references=run)["mean_a"] == pytest.approx(both["mean_b"])


def _sweep(folder, rows):
    """A sweep folder; rows: (id, source, prediction, reference), prompts in the XSum template."""
    folder.mkdir(parents=True)
    folder.joinpath("predictions.jsonl").write_text("".join(
        json.dumps({"id": i, "prompt": f"Summarize.\nArticle: {src}\nSummary:", "prediction": p,
                    "references": [ref]}) + "\n" for i, src, p, ref in rows))
    return folder


def test_runs_pair_by_input_not_by_id(tmp_path):
    """Two configs that draw their test subsets differently give one id to different inputs: pairing is by input."""
    a = _sweep(tmp_path / "a", [("t-0", "cats sleep", "cats sleep a lot", "cats sleep"),
                               ("t-1", "dogs bark", "dogs bark loudly", "dogs bark"),
                               ("t-2", "birds sing", "birds sing", "birds sing")])
    b = _sweep(tmp_path / "b", [("t-0", "dogs bark", "dogs bark loudly", "dogs bark"),  # same ids, other inputs
                               ("t-1", "cats sleep", "cats sleep a lot", "cats sleep"),
                               ("t-2", "fish swim", "fish", "fish swim")])
    with pytest.raises(ValueError, match=r"hold different inputs \(2 in one only.*--shared to use the 2 both hold"):
        compare(a, b)
    r = compare(a, b, samples=100, shared=True)
    assert r["n"] == 2 and r["diff"] == 0  # the same predictions for the same two inputs, whatever their ids
    # a boilerplate first line shared by two articles pairs on the same subset (by id and line), not across subsets
    dup = [("t-0", "Media playback is unsupported", "x", "y"), ("t-1", "Media playback is unsupported", "y", "y")]
    assert compare(_sweep(tmp_path / "c", dup), _sweep(tmp_path / "d", dup), samples=10)["n"] == 2
    other = [("t-0", "Media playback is unsupported", "x", "y"), ("t-1", "cats sleep", "cats", "cats sleep")]
    with pytest.raises(ValueError, match="share no input"):  # the repeated line cannot say which article it is
        compare(_sweep(tmp_path / "e", dup), _sweep(tmp_path / "f", other), samples=10, shared=True)


def test_the_same_inputs_under_other_ids_pair_without_shared(tmp_path):
    """Predictions written before 2026-12-01 number the subset, newer ones the split: the same 3 inputs under other
    ids (our committed CommonGen predictions against a new sweep) pair by input, every one, without ``--shared``."""
    rows = [("cats sleep", "cats sleep a lot", "cats sleep"), ("dogs bark", "dogs", "dogs bark"),
            ("birds sing", "birds sing", "birds sing")]
    a = _sweep(tmp_path / "a", [(f"t-{i}", *r) for i, r in enumerate(rows)])
    b = _sweep(tmp_path / "b", [(f"t-{i + 7}", *r) for i, r in enumerate(reversed(rows))])
    r = compare(a, b, samples=100)
    assert r["n"] == 3 and r["diff"] == 0


def _committed_files(tmp_path, data_dir):
    """Two report-style predictions files (input line, prediction, no references) over the fixture CommonGen test
    inputs: A repeats each input's first reference, B writes the same short sentence everywhere."""
    from hsd_lightning.data import CommonGenDataModule
    from hsd_lightning.data.readers import group_by_source
    from hsd_lightning.evaluation.report import source_line

    dm = CommonGenDataModule(data_dir=str(data_dir))
    groups = group_by_source(dm.pairs("test"))
    out = []
    for name, preds in (("a", [refs[0] for _, refs in groups]), ("b", ["A man sits in the sun."] * len(groups))):
        f = tmp_path / f"{name}.jsonl"
        f.write_text("".join(json.dumps({"id": f"commongen-test-{k}", "input": source_line(dm.template.format(source=s)),
                                         "prediction": p}) + "\n" for k, ((s, _), p) in enumerate(zip(groups, preds))))
        out.append(f)
    return (*out, groups)


def test_references_from_the_dataset_let_two_committed_files_compare(tmp_path, fixture_dir):
    a, b, groups = _committed_files(tmp_path, fixture_dir)
    r = compare(a, b, samples=100, references="commongen", data_dir=str(fixture_dir))
    by_hand = per_input_rouge_l({k: {"prediction": "A man sits in the sun.", "references": refs}
                                 for k, (_, refs) in enumerate(groups)})
    assert r["n"] == len(groups) == 5 and r["mean_a"] == pytest.approx(100)
    assert r["mean_b"] == pytest.approx(sum(by_hand.values()) / 5)
    with pytest.raises(ValueError, match=r"--references 'wikitext' is neither a sweep folder nor a dataset; give a "
                                         r"folder with predictions.jsonl or one of cnn_dailymail, commongen, e2e, "
                                         r"healthcaremagic, xsum"):
        compare(a, b, references="wikitext", data_dir=str(fixture_dir))
    with pytest.raises(ValueError, match="metric='bleu'; use one of rougeL, bertscore"):
        compare(a, b, metric="bleu")


def test_bertscore_per_input_mean_is_the_tables_bertscore(tmp_path, fixture_dir):
    a, b, groups = _committed_files(tmp_path, fixture_dir)
    r = compare(a, b, samples=100, references="commongen", data_dir=str(fixture_dir), metric="bertscore")
    table = GenerationScores()  # the table's BERTScore of B's predictions
    table.update([{"prediction": "A man sits in the sun.", "references": refs, "layers_per_token": [30, 30],
                   "generated_tokens": 1, "generation_seconds": 1.0} for _, refs in groups])
    assert r["mean_a"] == pytest.approx(100, abs=0.01)  # each prediction is one of its references
    assert r["mean_b"] == pytest.approx(table.compute()["bertscore"], abs=1e-4)
    assert r["diff_lo"] <= r["diff"] <= r["diff_hi"] and r["diff"] > 0


def test_a_repeated_input_line_takes_the_references_of_its_id_checked_by_the_line(tmp_path):
    """XSum articles may share a boilerplate first line ("Media playback is not supported"): the line cannot say
    which article a committed prediction is of, its id can, and is trusted only where the id's article shows it."""
    docs = [("Media playback is not supported\nA storm hit the coast.", "Storm hits coast."),
            ("Media playback is not supported\nThe team won the cup.", "Team wins cup."),
            ("Prices rose in May.\nInflation data.", "Prices rise.")]
    root = tmp_path / "data"
    (root / "xsum").mkdir(parents=True)
    (root / "xsum" / "test.jsonl").write_text("".join(json.dumps({"document": d, "summary": s}) + "\n" for d, s in docs))
    rows = [("xsum-test-0", "Article: Media playback is not supported", "Storm hits coast."),
            ("xsum-test-1", "Article: Media playback is not supported", "Team wins."),
            ("xsum-test-2", "Article: Prices rose in May.", "Prices rise.")]
    a = tmp_path / "a.jsonl"
    a.write_text("".join(json.dumps({"id": i, "input": line, "prediction": p}) + "\n" for i, line, p in rows))
    r = compare(a, a, samples=10, references="xsum", data_dir=str(root))
    by_hand = per_input_rouge_l({i: {"prediction": p, "references": [docs[k][1]]}
                                 for k, (i, _, p) in enumerate(rows)})
    assert r["n"] == 3 and r["mean_a"] == pytest.approx(sum(by_hand.values()) / 3)
    # an id whose article shows another line (a subset numbered its own way) is not trusted
    b = tmp_path / "b.jsonl"
    b.write_text(json.dumps({"id": "xsum-test-2", "input": rows[0][1], "prediction": "x"}) + "\n")
    with pytest.raises(ValueError, match="holds no references for 'Article: Media playback is not suppor"):
        compare(b, b, references="xsum", data_dir=str(root))
