"""Fidelity measures (issue 34): repetition, length, and the E2E slot matcher, checked against hand labels."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from hsd_lightning.evaluation.fidelity import fidelity_counts, hand_agreement, repeats, summarise, words
from hsd_lightning.evaluation.metrics import GenerationScores, format_table
from hsd_lightning.evaluation.report import first_difference, relative_to_vanilla
from hsd_lightning.evaluation.slots import match_slots, parse_mr

ROOT = Path(__file__).resolve().parents[1]
HAND = ROOT / "docs/results/e2e/slot_errors_hand.jsonl"
MR = {"name": "The Phoenix", "eatType": "pub", "food": "French", "priceRange": "£20-25",
      "customer rating": "3 out of 5", "area": "riverside", "familyFriendly": "no", "near": "Café Sicilia"}


def test_words_drop_punctuation_and_case():
    assert words("The Vaults Café, Café. 5 out of 5!") == ["the", "vaults", "café", "café", "5", "out", "of", "5"]


@pytest.mark.parametrize("pred, refs, want", [
    ("It has a rating of 5 out of 5 out of 5.", ["Rated 5 out of 5."], {"repeat3": 1, "repeat1": 0}),
    # "café café café" is one trigram once: a doubled word, not a repeated trigram
    ("The Vaults Café Café Café serves Italian food.", ["The Vaults serves Italian food."], {"repeat3": 0, "repeat1": 1}),
    ("The Vaults Café is a pub. The Vaults Café is a pub.", ["The Vaults Café is a pub."], {"repeat3": 1, "repeat1": 0}),
    ("Blue Spice is a coffee shop in the city centre.", ["Blue Spice is a coffee shop."], {"repeat3": 0, "repeat1": 0}),
    # a repeat the reference has too is not the output's fault
    ("It is near the river. It is near the centre.", ["It is near the X and it is near the Y."], {"repeat3": 0, "repeat1": 0}),
    ("had had a very very good time", ["they had had enough"], {"repeat3": 0, "repeat1": 1}),
])
def test_repeats_count_what_the_references_do_not_repeat(pred, refs, want):
    assert repeats(pred, refs) == want


def test_parse_mr_reads_e2e_and_refuses_other_text():
    assert parse_mr("Attributes: name[Blue Spice], eatType[coffee shop], area[city centre]") == {
        "name": "Blue Spice", "eatType": "coffee shop", "area": "city centre"}
    assert parse_mr("Concepts: dog, frisbee, catch") is None
    assert parse_mr("see [1] and [2]") is None


@pytest.mark.parametrize("text, slots, added", [
    # every slot said, paraphrased
    ("The Phoenix is a French pub by the river near Café Sicilia, priced £20-25, rated 3 out of 5. It is not "
     "family-friendly.", {}, []),
    # missed ones
    ("The Phoenix is a pub.", {"food": "missed", "priceRange": "missed", "customer rating": "missed",
                               "area": "missed", "familyFriendly": "missed", "near": "missed"}, []),
    # a contradiction is wrong, a repeat of a right value is not an error, "3 out of 5 out of 5" says 3
    ("The Phoenix is a family-friendly French pub in the riverside area near Café Sicilia with a moderate price range. "
     "It is not family-friendly. It has a customer rating of 3 out of 5 out of 5.", {"familyFriendly": "wrong"}, []),
    # a mangled landmark is wrong, and its words are no food ("Indian") nor eatType ("Café")
    ("The Phoenix is a French pub in the riverside area near Café Sic Sic. It is not kid friendly, has an average "
     "customer rating and moderate prices.", {"near": "wrong"}, []),
    # another value is wrong; a slot of no MR is added
    ("The Phoenix is an expensive Italian coffee shop in the city centre near Café Sicilia with a 3 out of 5 "
     "rating. It is not family-friendly.", {"food": "wrong", "priceRange": "wrong", "eatType": "wrong",
                                            "area": "wrong"}, []),
])
def test_match_slots(text, slots, added):
    got = match_slots(MR, text)
    assert got["slots"] == {s: slots.get(s, "ok") for s in MR}
    assert got["added"] == added


def test_added_slots_and_venues():
    mr = {"name": "Blue Spice", "eatType": "coffee shop"}
    got = match_slots(mr, "Blue Spice is a cheap, family friendly coffee shop near Café Rouge serving Indian food.")
    assert got == {"slots": {"name": "ok", "eatType": "ok"},
                   "added": ["near", "food", "priceRange", "familyFriendly"]}
    # a landmark's words are not slots ("Raja Indian Cuisine" is no Indian food, "Rainbow Vegetarian Café" no café)
    mr = {"name": "Cotto", "eatType": "pub", "near": "Raja Indian Cuisine"}
    assert match_slots(mr, "Cotto is a pub near Raja Indian Cuisine.")["added"] == []
    assert match_slots(mr, "Cotto is a pub near The Rice Boat.")["slots"]["near"] == "wrong"


def test_slot_matcher_agrees_with_the_hand_labels():
    """The committed hand labels (112 outputs of 4 decoders, docs/results/e2e/slot_errors_hand.md): the matcher must
    agree on whether each slot is an error on >= 95 % of the slots of each sample (measured: 98.9 % on the sample it
    was written with, 99.7 % held out) and give each decoder's SER within 3 points of the hand SER."""
    rows = [json.loads(line) for line in HAND.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 40 and len({r["decoder"] for r in rows}) >= 3
    table = hand_agreement(HAND)
    assert {r["sample"] for r in table} == {"development", "held-out"}
    for r in table:
        assert r["agree_error"] >= 95.0 or r["decoder"] != "all", r
        assert abs(r["ser_hand"] - r["ser_matcher"]) <= 3.0, r


def test_scores_carry_the_fidelity_columns_and_the_table_shows_them():
    recs = [{"id": f"e2e-test-{i}", "prompt": "Attributes: name[Blue Spice], eatType[pub]\nSentence:",
             "prediction": p, "references": ["Blue Spice is a pub."], "layers_per_token": [30, 30, 30],
             "generated_tokens": 3, "generation_seconds": 0.1}
            for i, p in enumerate(["Blue Spice is a pub.", "Blue Spice is a pub pub is a pub."])]
    scores = GenerationScores(bertscore=False)
    scores.update(recs)
    m = scores.compute()
    assert m["repeat3"] == 50.0 and m["repeat1"] == 50.0 and m["mean_words"] == 7.0
    assert m["slots_total"] == 4 and m["ser"] == 0.0
    table = format_table([{"decoder": "vanilla", **m}])
    assert "SER %" in table and "repeat-3 %" in table
    # off E2E no SER column: a column with no value is left out
    other = dict(recs[0], prompt="Concepts: dog, ball\nSentence:")
    scores.reset_states()
    scores.update([other])
    m = scores.compute()
    assert math.isnan(m["ser"]) and "SER %" not in format_table([{"decoder": "vanilla", **m}])


def test_length_ratio_is_against_vanilla():
    rows = [{"decoder_name": "vanilla", "decoder": "vanilla", "mean_words": 20.0},
            {"decoder_name": "hsd", "decoder": "hsd(s=1)", "mean_words": 23.0}]
    relative_to_vanilla(rows)
    assert rows[1]["length_ratio"] == pytest.approx(1.15)


def test_first_difference_is_chosen_by_rule():
    same = [{"prediction": "a"}, {"prediction": "b"}, {"prediction": "c"}]
    assert first_difference({"vanilla": same, "hsd": same}) is None
    assert first_difference({"vanilla": same, "hsd": same[:2] + [{"prediction": "x"}]}) == 2


def test_summarise_without_references_or_mrs():
    m = summarise([fidelity_counts({"prediction": "a a b", "references": [], "input": "free text"})])
    assert m["mean_words"] == 3 and math.isnan(m["repeat3"]) and math.isnan(m["ser"])


def test_fidelity_tool_adds_the_columns_to_a_committed_run(tmp_path):
    """`hsd-lightning fidelity <run>` on a committed run (summary.csv + predictions.jsonl.gz without references):
    references come from the data (here the packaged E2E sample), the columns land in summary.csv."""
    import csv
    import gzip

    from hsd_lightning.evaluation.bootstrap import references_from_data
    from hsd_lightning.tools.fidelity import main

    refs = references_from_data("e2e", None, "test")
    first = refs["e2e-test-0"]
    mr = parse_mr(first["prompt"])
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    with (run / "summary.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["dataset", "decoder", "avg_layer", "rougeL"])
        w.writeheader()
        w.writerows([{"dataset": "e2e", "decoder": d, "avg_layer": 30, "rougeL": 50} for d in ("vanilla", "hsd")])
    good = f"{mr['name']} is a place."
    rec = {"id": "e2e-test-0", "input": first["prompt"].splitlines()[1],
           "outputs": {"vanilla": {"prediction": good}, "hsd": {"prediction": "A place place place. A place place."}}}
    with gzip.open(run / "predictions.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")
    main([str(tmp_path / "runs")])
    rows = {r["decoder"]: r for r in csv.DictReader((run / "summary.csv").open())}
    assert float(rows["vanilla"]["repeat3"]) == 0 and float(rows["hsd"]["repeat3"]) == 100
    assert float(rows["hsd"]["repeat1"]) == 100 and float(rows["vanilla"]["mean_words"]) == len(words(good))
    assert float(rows["vanilla"]["slots_missed"]) == len(mr) - 1  # only the name is said
    assert float(rows["hsd"]["slots_missed"]) == len(mr) and rows["hsd"]["split"] == "test"
    with pytest.raises(SystemExit, match="no run summary"):
        main([str(tmp_path / "nothing")])


def test_flop_ideal_speedup_counts_the_lm_head():
    """The report's FLOP-ideal of a row: (L * layer + head) / (avg_layer * layer + head), and the share of it the
    measured speed-up reaches."""
    rows = [{"decoder_name": "vanilla", "decoder": "vanilla", "avg_layer": 30.0, "tokens_per_second": 10.0,
             "num_layers": 30, "flops_layer": 1.0, "flops_head": 8.0},
            {"decoder_name": "hsd", "decoder": "hsd(s=1)", "avg_layer": 15.0, "tokens_per_second": 14.0,
             "num_layers": 30, "flops_layer": 1.0, "flops_head": 8.0}]
    relative_to_vanilla(rows)
    assert rows[1]["ideal_speedup"] == pytest.approx(38 / 23)
    assert rows[1]["of_ideal"] == pytest.approx(1.4 / (38 / 23))
    assert rows[0]["ideal_speedup"] == pytest.approx(1.0)
