"""Our torchmetrics-based scores agree with rouge-score and sacrebleu; bad runs are handled; report works."""
import csv
import json
import math
from pathlib import Path

import pytest

from hsd_lightning.evaluation.metrics import GenerationScores
from hsd_lightning.evaluation.report import main as report_main

RECORDS = [
    {"prediction": "The Eagle is a cheap coffee shop near Burger King.",
     "references": ["The Eagle is a low-priced coffee shop near Burger King.", "Near Burger King is The Eagle."]},
    {"prediction": "A family friendly Japanese place in the riverside area.",
     "references": ["In the riverside area there is a family friendly Japanese restaurant."]},
    {"prediction": "running dogs chase the red ball in the park",
     "references": ["A dog runs after a red ball in a park.", "The dogs chased the ball.", "dogs in the park"]},
    {"prediction": "", "references": ["An empty prediction scores zero."]},
]


def _records():
    return [dict(r, id=str(i), layers_per_token=[6, 3, 3], generated_tokens=3, generation_seconds=0.1)
            for i, r in enumerate(RECORDS)]


def test_scores_match_rouge_score_and_sacrebleu():
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import BLEU

    s = GenerationScores(bertscore=False)
    s.update(_records()[:2])
    s.update(_records()[2:])  # accumulated across batches
    ours = s.compute()
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for key in ("rouge1", "rouge2", "rougeL"):
        ref = sum(max(scorer.score(t, r["prediction"])[key].fmeasure for t in r["references"]) for r in RECORDS)
        assert ours[key] == pytest.approx(100 * ref / len(RECORDS), abs=0.01)
    preds = [r["prediction"] for r in RECORDS]
    n_refs = max(len(r["references"]) for r in RECORDS)
    refs = [[r["references"][k] if k < len(r["references"]) else None for r in RECORDS] for k in range(n_refs)]
    for n, key in ((1, "bleu1"), (4, "bleu4")):
        # sacrebleu's defaults (13a tokenization, case-sensitive) but for the n-gram order; no smoothing needed
        sb = BLEU(max_ngram_order=n, smooth_method="none").corpus_score(preds, refs).score
        assert ours[key] == pytest.approx(sb, abs=0.01)
    assert ours["avg_layer"] == 3.0 and ours["empty_predictions"] == 1 and ours["tokens_per_second"] == pytest.approx(30)


def test_bleu_tokenizes_punctuation_like_sacrebleu():
    """'Spice,' and 'Spice' are one token after 13a: a whitespace split would miss every punctuated match."""
    s = GenerationScores(bertscore=False)
    s.update([dict(_records()[0], prediction="Blue Spice, a coffee shop.", references=["Blue Spice is a coffee shop"])])
    assert s.compute()["bleu1"] == pytest.approx(100 * 5 / 7, abs=0.01)  # 7 tokens: Blue Spice , a coffee shop .


def test_bertscore_offline_best_reference_and_empty_prediction():
    s = GenerationScores()
    s.update(_records())
    m = s.compute()
    assert 0 < m["bertscore"] < 100
    one = GenerationScores()
    one.update([dict(_records()[0], prediction=RECORDS[0]["references"][0])])
    assert one.compute()["bertscore"] == pytest.approx(100, abs=0.01)  # identical to one of its references


def test_inputs_without_references_are_counted_not_scored():
    s = GenerationScores(bertscore=False)
    s.update([dict(_records()[0], references=["", " "])])
    scored_alone = GenerationScores(bertscore=False)
    scored_alone.update(_records()[:1])
    s.update(_records()[:1])
    out, alone = s.compute(), scored_alone.compute()
    assert out["examples"] == 2 and out["scored_examples"] == 1
    assert out["rougeL"] == alone["rougeL"] and out["bleu1"] == alone["bleu1"]  # quality over the referenced one
    nothing = GenerationScores(bertscore=False)
    nothing.update([dict(_records()[0], references=[])])
    got = nothing.compute()
    assert got["examples"] == 1 and got["scored_examples"] == 0 and math.isnan(got["rougeL"])


def test_report_groups_datasets_and_names_missing_metrics(tmp_path, capsys):
    for ds, dec, name, avg, tps in [("e2e", "vanilla", "vanilla", 30.0, 10.0), ("e2e", "hsd(s=1,min=0,max=10)", "hsd", 15.0, 17.0),
                                    ("xsum", "vanilla", "vanilla", 30.0, 5.0), ("xsum", "calm(d=0.02)", "calm", 8.0, 4.0)]:
        d = tmp_path / ds / dec
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({"dataset": ds, "model": "m", "decoder": dec, "decoder_name": name,
                                                    "avg_layer": avg, "rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0,
                                                    "bleu1": 1.0, "bertscore": 50.0, "tokens_per_second": tps}))
    (tmp_path / "empty").mkdir()
    report_main([str(tmp_path), str(tmp_path / "empty"), "--out", str(tmp_path / "rep")])
    out = capsys.readouterr()
    assert "holds no metrics.json" in out.err
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "### e2e / m / zero-shot" in md and "### xsum / m / zero-shot" in md and "| 1.70 |" in md  # speed-up 17/10 within e2e
    assert (tmp_path / "rep" / "pareto.png").stat().st_size > 10_000
    for ds in ("e2e", "xsum"):  # one Fig. 1 per task, with the paper's GPT-2 rows
        assert (tmp_path / "rep" / f"fig1_{ds}.png").stat().st_size > 10_000
    with pytest.raises(SystemExit, match="nothing to report"):
        report_main([str(tmp_path / "empty")])


def test_report_keeps_weights_and_beams_apart_with_percent_of_vanilla(tmp_path, capsys):
    runs = [("zero-shot", None, 4, "vanilla", 30.0, 40.0), ("zero-shot", None, 4, "hsd", 17.0, 10.0),
            ("skip-aware FT", "runs/sa/version_0/checkpoints/last.ckpt", 4, "vanilla", 30.0, 60.0),
            ("skip-aware FT", "runs/sa/version_0/checkpoints/last.ckpt", 4, "hsd", 17.0, 57.0),
            ("skip-aware FT", "runs/sa/version_0/checkpoints/last.ckpt", 1, "vanilla", 30.0, 50.0)]
    for i, (kind, ckpt, beams, name, avg, rl) in enumerate(runs):
        d = tmp_path / str(i)
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps({
            "dataset": "e2e", "model": "m", "decoder": name, "decoder_name": name, "training": kind,
            "checkpoint": ckpt, "num_beams": beams, "avg_layer": avg, "rougeL": rl, "bertscore": 50.0,
            "tokens_per_second": 10.0}))
    report_main([str(tmp_path), "--out", str(tmp_path / "rep")])
    md = (tmp_path / "rep" / "report.md").read_text()
    titles = [line for line in md.splitlines() if line.startswith("### ")]
    assert titles[:3] == ["### e2e / m / zero-shot / beam 4", "### e2e / m / skip-aware FT (sa/last.ckpt) / beam 4",
                          "### e2e / m / skip-aware FT (sa/last.ckpt) / greedy"]
    assert "| hsd | 17.00 |" in md and "| 95.0 |" in md and "| 25.0 |" in md  # 57/60 and 10/40 of their own vanilla
    assert "the paper's GPT-2 large" in md and "| hsd(s=1,min=0,max=12) | 21.38 |" in md  # paper Table 4 row


def test_report_saves_one_committed_run_per_group(tmp_path):
    run = tmp_path / "runs" / "hsd"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"dataset": "e2e", "model": "m", "decoder": "hsd(s=1)",
                                                  "decoder_name": "hsd", "num_beams": 4, "avg_layer": 2.0}))
    rec = {"id": "e2e-test-0", "prompt": "Describe it.\nAttributes: name[X]\nDescription:", "prediction": "X is.",
           "references": ["X."], "layers_per_token": [6, 2, 4]}
    (run / "predictions.jsonl").write_text(json.dumps(rec) + "\n")
    report_main([str(tmp_path / "runs"), "--out", str(tmp_path / "rep"), "--save_runs", str(tmp_path / "e2e"),
                 "--no_paper"])
    saved = tmp_path / "e2e" / "runs" / "zero-shot_beam4"  # a plain name: the weights and the decoding
    from hsd_lightning.evaluation.runs import decoder_records, read_predictions, read_summary

    assert [r["decoder"] for r in read_summary(saved)] == ["hsd(s=1)"]
    assert read_predictions(saved / "predictions.jsonl.gz") == [
        {"id": "e2e-test-0", "input": "Attributes: name[X]",
         "outputs": {"hsd(s=1)": {"prediction": "X is.", "avg_layers": 3.0, "passes": 3}}}]
    spec = f"{saved / 'predictions.jsonl.gz'}#hsd(s=1)"
    assert decoder_records(spec)[0]["prediction"] == "X is."
    with pytest.raises(ValueError, match=r"holds no decoder 'vanilla'; it holds \['hsd\(s=1\)'\]"):
        decoder_records(f"{saved / 'predictions.jsonl.gz'}#vanilla")
    # the depth tool reads a committed run's decoder as it reads a run's own file
    from hsd_lightning.evaluation.depth import main as depth_main
    depth_main([spec, "--num_layers", "6", "--t_max", "2", "--out", str(tmp_path / "d.md"),
                "--decoders", '[["vanilla", {}]]'])
    assert "| 2 | 6.00 (1.000 L) |" in (tmp_path / "d.md").read_text()


def test_pair_bertscore_equals_torchmetrics_pair_by_pair_and_ignores_batching():
    """torchmetrics' BERTScore is right for a pair scored alone (its length sort is then the identity) but
    misaligns pairs in a batch of different lengths; ours equals it alone and does not depend on the batch."""
    from torchmetrics.text.bert import BERTScore

    from hsd_lightning.evaluation.bertscore import PairBERTScore
    from hsd_lightning.evaluation.metrics import default_bertscore_model

    preds = ["Blue Spice is a coffee shop in the city centre.", "Aromi serves Chinese food.",
             "The Phoenix is a cheap French pub near the river, rated 5 out of 5 by customers.", "x"]
    refs = ["Blue Spice coffee shop, city centre.", "There is a Chinese place called Aromi with a very long name "
            "and an even longer description of its food and service.", "The Phoenix pub serves French food.", "y z"]
    ours = PairBERTScore(default_bertscore_model(), batch_size=4)
    batched = ours.f1(preds, refs)
    alone = []
    for p, r in zip(preds, refs):
        tm = BERTScore(model_name_or_path=default_bertscore_model(), max_length=512)
        tm.update([p], [r])
        alone.append(float(tm.compute()["f1"]))
    assert batched.tolist() == pytest.approx(alone, abs=1e-4)
    ours.batch_size = 1
    assert ours.f1(preds, refs).tolist() == pytest.approx(batched.tolist(), abs=1e-5)
    assert ours.f1(preds[::-1], refs[::-1]).tolist() == pytest.approx(batched.tolist()[::-1], abs=1e-5)


def test_rescore_recomputes_scores_and_keeps_the_rest(tmp_path, capsys):
    from hsd_lightning.evaluation.rescore import main as rescore_main

    run = tmp_path / "e2e" / "hsd"
    run.mkdir(parents=True)
    recs = [{"id": f"e2e-test-{i}", "prediction": p, "references": ["Aromi is a pub.", "A pub called Aromi."],
             "layers_per_token": [30, 15, 15], "generated_tokens": 3, "generation_seconds": 0.5}
            for i, p in enumerate(["Aromi is a pub.", "Aromi is a cheap pub."])]
    (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (run / "metrics.json").write_text(json.dumps({"decoder": "hsd", "rougeL": 1.0, "bertscore": 1.0, "agreement": 77.0}))
    rescore_main([str(tmp_path)])
    m = json.loads((run / "metrics.json").read_text())
    assert m["agreement"] == 77.0 and m["decoder"] == "hsd" and m["examples"] == 2 and m["avg_layer"] == 15.0
    assert m["rougeL"] > 80 and m["bertscore"] > 90
    assert "R-L" in capsys.readouterr().out


@pytest.mark.parametrize("prompt,line", [
    ("Describe it.\nAttributes: name[X]\nDescription:", "Attributes: name[X]"),
    ("Write one sentence that uses all of these concepts: dog, run\nSentence:",
     "Write one sentence that uses all of these concepts: dog, run"),
    ("Summarize.\nArticle: A long text\nSummary:", "Article: A long text"),
])
def test_report_shows_the_input_line_of_each_template(prompt, line):
    from hsd_lightning.evaluation.report import source_line

    assert source_line(prompt) == line


def test_targets_check_depth_hsd_vs_skipdecode_and_vanilla_cost(tmp_path):
    from hsd_lightning.evaluation.targets import hsd_vs_skipdecode, load_groups, vanilla_cost
    from hsd_lightning.evaluation.targets import main as targets_main
    # (weights, decoder, avg layers, R-L, BERTScore): the FT run has vanilla 50; the skip-aware run 49 (2 % cost) with
    # HSD s=1 at 18 layers (0.60 L) keeping 96 % / 97 %, HSD s=2 at 16 layers (0.53 L: too deep for its target),
    # SkipDecode at 17 layers beaten by HSD s=2 below it on R-L but not BERTScore; an always-run HSD row that would
    # win is left out
    ckpt = {"FT": "runs/ft/version_0/checkpoints/last.ckpt", "skip-aware FT": "runs/sa/version_0/checkpoints/last.ckpt"}
    runs = [("FT", "vanilla", 30.0, 50.0, 90.0),
            ("skip-aware FT", "vanilla", 30.0, 49.0, 90.0),
            ("skip-aware FT", "hsd(s=1,min=0,max=10)", 18.0, 47.04, 87.3),
            ("skip-aware FT", "hsd(s=2,min=0,max=10)", 16.0, 46.0, 80.0),
            ("skip-aware FT", "hsd(s=2,min=0,max=10,always=1)", 16.5, 48.0, 89.0),
            ("skip-aware FT", "skipdecode(min=8,max=20)", 17.0, 45.0, 81.0)]
    for i, (kind, name, avg, rl, bs) in enumerate(runs):
        d = tmp_path / "runs" / str(i)
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({
            "dataset": "e2e", "model": "m", "decoder": name, "decoder_name": name.split("(")[0], "training": kind,
            "checkpoint": ckpt[kind], "num_beams": 4, "avg_layer": avg, "rougeL": rl, "bertscore": bs}))
    report_main([str(tmp_path / "runs"), "--out", str(tmp_path / "rep"), "--no_paper", "--save_runs",
                 str(tmp_path / "e2e")])
    saved = sorted(str(p) for p in (tmp_path / "e2e" / "runs").iterdir())
    assert [Path(p).name for p in saved] == ["ft_beam4", "sa_beam4"]
    groups = load_groups(saved)
    targets_main([*saved, "--out", str(tmp_path / "targets.md")])
    md = (tmp_path / "targets.md").read_text()
    sa = "e2e / m / skip-aware FT (sa/last.ckpt) / beam 4"
    assert f"| {sa} | hsd(s=1,min=0,max=10) | >= 95 % at <= 0.62 L | 0.60 | 96.0 | 97.0 | **met** |" in md
    assert f"| {sa} | hsd(s=2,min=0,max=10) | >= 90 % at <= 0.50 L | 0.53 | 93.9 | 88.9 | not met |" in md
    [sd] = hsd_vs_skipdecode({sa: groups[sa]})
    assert (sd["hsd"], sd["met"]) == ("hsd(s=2,min=0,max=10)", False)  # 93.9 > 91.8 on R-L, 88.9 < 90.0 BERTScore
    # the HSD row best on R-L loses on BERTScore, but another one at lower depth wins on both: met
    rows = [{"decoder": d, "avg_layer": a, "pct_rougeL": rl, "pct_bertscore": bs} for d, a, rl, bs in [
        ("skipdecode(min=8,max=20)", 17.0, 80.0, 80.0), ("hsd(s=1,min=0,max=7)", 16.0, 90.0, 70.0),
        ("hsd(s=2,min=0,max=10)", 15.0, 85.0, 85.0), ("hsd(s=1,min=0,max=10)", 18.0, 99.0, 99.0)]]
    [sd] = hsd_vs_skipdecode({"g": rows})
    assert (sd["hsd"], sd["met"]) == ("hsd(s=2,min=0,max=10)", True)
    [cost] = vanilla_cost(groups)
    assert cost["group"] == sa and cost["cost"] == pytest.approx(2.0) and cost["met"]
    assert cost["ft_group"] == "FT (ft/last.ckpt)"  # which standard fine-tune the cost is measured against
    assert "| FT (ft/last.ckpt) | 50.00 | 49.00 | 2.0 | – | – | – | **met** |" in md
    # with the E2E slot error rate on both vanilla rows, the cost also counts SER points: 1.0 added is met, 1.5 not
    for ser, met in ((7.0, True), (7.5, False)):
        g = {t: [dict(r) for r in rows] for t, rows in groups.items()}
        for t, rows in g.items():
            next(r for r in rows if r["decoder"] == "vanilla")["ser"] = ser if "skip-aware" in t else 6.0
        [cost] = vanilla_cost(g)
        assert cost["ser_added"] == pytest.approx(ser - 6.0) and cost["met"] is met
    # runs decoded on different test subsets (configs drawing them differently): their means are not compared
    import gzip
    for run, inputs in (("sa_beam4", ["a", "b", "c"]), ("ft_beam4", ["a", "b", "d"])):
        with gzip.open(tmp_path / "e2e" / "runs" / run / "predictions.jsonl.gz", "wt") as f:
            f.write("".join(json.dumps({"id": f"e2e-test-{i}", "input": x, "outputs": {"vanilla": {"prediction": "p"}}})
                            + "\n" for i, x in enumerate(inputs)))
    [cost] = vanilla_cost(load_groups(saved))
    assert cost["met"] is None and cost["shared_inputs"] == "2 of 3"
    targets_main([*saved, "--out", str(tmp_path / "targets.md")])
    assert "| 2.0 | – | – | – | not comparable: other test inputs (2 of 3 shared;" in (tmp_path / "targets.md").read_text()
    with pytest.raises(SystemExit, match="no run summary at nope"):
        targets_main(["nope"])
    # a run on inputs without references (R-L and BERTScore empty in its summary) is left out, not a crash
    unscored = tmp_path / "e2e" / "runs" / "sa_beam4_unscored"
    unscored.mkdir()
    with (tmp_path / "e2e" / "runs" / "sa_beam4" / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    with (unscored / "summary.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({**r, "rougeL": "nan", "pct_rougeL": "", "bertscore": "nan", "pct_bertscore": "",
                     "checkpoint": "runs/unscored/version_0/checkpoints/last.ckpt"} for r in rows)
    assert len(load_groups([*saved, str(unscored)])) == 2
    targets_main([*saved, str(unscored), "--out", str(tmp_path / "targets.md")])


def test_forward_passes_are_counted_per_batch_and_give_the_speed_up_per_pass(tmp_path, fixture_dir):
    """Each record carries its share of its batch's forward passes of the layer stack (prompt pass + one per step).
    Greedy decoding steps until the longest output of the batch ends, so the shares of a batch add up to its longest
    output, under every decoder; the metrics divide seconds by passes, and the report turns that into a speed-up
    per pass against vanilla (and its fraction of the FLOP-ideal)."""
    import lightning as L

    from hsd_lightning.data import E2EDataModule
    from hsd_lightning.decoding import build_decoder
    from hsd_lightning.evaluation.report import relative_to_vanilla
    from hsd_lightning.models.module import CausalLMModule

    mod = CausalLMModule("tiny-llama", num_beams=1, max_new_tokens=7)
    rows = []
    for settings in ({"name": "vanilla"}, {"name": "hsd", "s": 1, "e_max": 2}, {"name": "skipdecode", "e_min": 1,
                                                                                "e_max": 3}, {"name": "calm", "d": 0.1}):
        mod.use_decoder(build_decoder(**settings))
        dm = E2EDataModule(tokenizer="tiny-llama", data_dir=str(fixture_dir), max_eval_samples=5, eval_batch_size=3)
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                            default_root_dir=tmp_path)
        batches = trainer.predict(mod, datamodule=dm)
        assert [len(b) for b in batches] == [3, 2]
        for batch in batches:
            assert sum(r["forward_passes"] for r in batch) == pytest.approx(max(r["generated_tokens"] for r in batch))
        records = [r for b in batches for r in b]
        scores = GenerationScores(bertscore=False)
        scores.update(records)
        out = scores.compute()
        passes = sum(max(r["generated_tokens"] for r in b) for b in batches)
        assert out["seconds_per_pass"] == pytest.approx(sum(r["generation_seconds"] for r in records) / passes)
        rows.append({"decoder": settings["name"], "decoder_name": settings["name"], **out, "flops_layer": 1.0,
                     "flops_head": 1.0, "num_layers": 4})
    older = [dict(r) for r in records]  # predictions written before passes were counted: no number, not a zero
    for r in older:
        del r["forward_passes"]
    scores = GenerationScores(bertscore=False)
    scores.update(older)
    assert math.isnan(scores.compute()["seconds_per_pass"])
    relative_to_vanilla(rows)
    hsd = rows[1]
    assert hsd["pass_speedup"] == pytest.approx(rows[0]["seconds_per_pass"] / hsd["seconds_per_pass"])
    assert hsd["pass_of_ideal"] == pytest.approx(hsd["pass_speedup"] / hsd["ideal_speedup"])
