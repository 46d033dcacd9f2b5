"""Data modules on real rows of each dataset: grouping, masking, padding, truncation, bad input."""
import json
import warnings

import pytest

from hsd_lightning.data import DATAMODULES, E2EDataModule
from hsd_lightning.data.readers import SPECS, read_pairs


@pytest.mark.parametrize("name", sorted(DATAMODULES))
def test_each_dataset_reads_trains_and_generates(name, data_root):
    dm = DATAMODULES[name](data_dir=str(data_root), max_train_samples=6, max_eval_samples=3, batch_size=3,
                           eval_batch_size=3, max_source_tokens=64)
    assert dm.pairs("train") and dm.source_used.startswith("local")
    b = next(iter(dm.train_dataloader()))
    ids, labels, mask = b["input_ids"], b["labels"], b["attention_mask"]
    eos = dm.tokenizer.eos_token_id
    for i in range(ids.shape[0]):
        n = int(mask[i].sum())
        assert mask[i, :n].all() and not mask[i, n:].any()  # right padding
        assert (labels[i, n:] == -100).all()  # padding masked
        tgt = labels[i, :n] != -100
        first = int(tgt.nonzero()[0])
        assert not tgt[:first].any() and tgt[first:].all()  # prompt masked, target (and EOS) kept
        assert labels[i, n - 1] == eos and ids[i, n - 1] == eos
    g = next(iter(dm.predict_dataloader()))
    gm = g["attention_mask"]
    for i in range(gm.shape[0]):
        n = int(gm[i].sum())
        assert gm[i, -n:].all() and not gm[i, :-n].any()  # left padding
    assert len(g["ids"]) == len(g["references"]) == 3 and all(g["references"])


def test_multi_reference_inputs_are_grouped(data_dir):
    dm = E2EDataModule(data_dir=str(data_dir), max_eval_samples=5)
    ds = dm.dataset_for("test", "generate")
    pairs = read_pairs(SPECS["e2e"], data_dir, "test")
    for row in ds:
        refs = [t for s, t in pairs if s == row["source"]]
        assert row["references"] == refs and len(refs) >= 1
    assert len(set(ds["source"])) == len(ds)
    assert any(len(r) > 1 for r in ds["references"])
    # training keeps every (input, reference) pair
    assert len(dm.pairs("train")) == 42061


def test_fixtures_keep_the_native_formats(fixture_dir):
    """The made-up fixtures exercise what the real files do: several references per input, long sources."""
    e2e = E2EDataModule(data_dir=str(fixture_dir)).dataset_for("test", "generate")
    assert len(e2e) == 5 and all(len(r) == 3 for r in e2e["references"])
    assert read_pairs(SPECS["commongen"], fixture_dir, "test")[0][0] == "sun, beach, sit"
    for name in DATAMODULES:
        for split in ("train", "validation", "test"):
            assert read_pairs(SPECS[name], fixture_dir, split), (name, split)


def test_commongen_concepts_and_all_scenes(data_dir):
    pairs = read_pairs(SPECS["commongen"], data_dir, "validation")
    first = json.loads((data_dir / "commongen" / "commongen.dev.jsonl").open().readline())
    assert pairs[0][0] == "field, look, stand"
    assert [t for s, t in pairs if s == pairs[0][0]][: len(first["scene"])] == first["scene"]


def test_long_sources_truncated_never_the_target(data_root):
    dm = DATAMODULES["cnn_dailymail"](data_dir=str(data_root), max_train_samples=4, max_source_tokens=20)
    ds = dm.dataset_for("train", "train")
    prefix, suffix = dm.template.split("{source}")
    tok = dm.tokenizer
    n_tmpl = len(tok(prefix, add_special_tokens=False)["input_ids"]) + len(tok(suffix, add_special_tokens=False)["input_ids"])
    pairs = dm.pairs("train")[:4]
    for row, (_, target) in zip(ds, pairs):
        prompt_len = sum(1 for x in row["labels"] if x == -100)
        assert prompt_len == n_tmpl + 20
        assert tok.decode([x for x in row["labels"] if x != -100][:-1]).strip() == target.strip()
    assert dm.num_truncated["train"] == 4


def test_missing_folder_and_malformed_rows(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"xsum: data folder .*xsum not found; set data.data_dir"):
        DATAMODULES["xsum"](data_dir=str(tmp_path)).dataset_for("train", "train")
    (tmp_path / "xsum").mkdir()
    rows = [{"document": "a b c", "summary": "x"}, {"document": "", "summary": "y"}, {"summary": "z"}]
    (tmp_path / "xsum" / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        pairs = read_pairs(SPECS["xsum"], tmp_path, "train")
    assert pairs == [("a b c", "x")]
    assert any("skipped 3 malformed rows" in str(x.message) for x in w)
    (tmp_path / "xsum" / "validation.jsonl").write_text(json.dumps({"document": "", "summary": ""}) + "\n")
    with pytest.raises(ValueError, match="split 'validation' is empty after filtering"):
        DATAMODULES["xsum"](data_dir=str(tmp_path)).dataset_for("validation", "generate")


def test_subsetting_is_deterministic(data_root):
    a = E2EDataModule(data_dir=str(data_root), max_train_samples=5, shuffle_subset=True, seed=1)
    b = E2EDataModule(data_dir=str(data_root), max_train_samples=5, shuffle_subset=True, seed=1)
    assert a.dataset_for("train", "train")["input_ids"] == b.dataset_for("train", "train")["input_ids"]
    with pytest.raises(ValueError, match="no '{source}' placeholder"):
        E2EDataModule(prompt_template="no placeholder")


def test_an_example_id_names_one_input_under_any_subset(data_root):
    """A first-N and a seeded random subset of the test split: the ids they share name the same inputs."""
    whole = E2EDataModule(data_dir=str(data_root)).dataset_for("test", "generate")
    first = E2EDataModule(data_dir=str(data_root), max_eval_samples=3).dataset_for("test", "generate")
    shuffled = E2EDataModule(data_dir=str(data_root), max_eval_samples=3, shuffle_subset=True,
                             seed=3).dataset_for("test", "generate")
    source = dict(zip(whole["id"], whole["source"]))
    assert len(source) == len(whole) > 3 and first["id"] == [f"e2e-test-{k}" for k in range(3)]
    assert set(shuffled["id"]) != set(first["id"])  # another subset
    for ds in (first, shuffled):
        assert [source[i] for i in ds["id"]] == ds["source"]


def test_packaged_e2e_sample_is_used_without_a_data_folder(tmp_path, caplog):
    """A clone without the data folder still runs the main job: E2E test falls back to the packaged 50-MR sample."""
    import logging

    from hsd_lightning.data.datamodule import E2EDataModule

    dm = E2EDataModule(data_dir=str(tmp_path / "nowhere"), max_eval_samples=16)
    with caplog.at_level(logging.WARNING):
        ds = dm.dataset_for("test", "generate")
    assert len(ds) == 16 and dm.source_used.startswith("sample ") and "packaged sample" in caplog.text
    assert ds[0]["source"].startswith("name[") and len(ds[0]["references"]) > 1  # multi-reference kept
    assert len(E2EDataModule(data_dir=str(tmp_path / "nowhere")).dataset_for("test", "generate")) == 50
    with pytest.raises(FileNotFoundError, match="e2e: data folder .* not found; set data.data_dir"):  # no train sample
        E2EDataModule(data_dir=str(tmp_path / "nowhere")).dataset_for("train", "train")


@pytest.mark.parametrize("name,rows,split,expect", [
    # E2E: one row per reference; rows sharing an MR stay one multi-reference input
    ("e2e", [{"meaning_representation": "name[A]", "human_reference": "A is."},
             {"meaning_representation": "name[A]", "human_reference": "There is A."}], "test",
     ("e2e_nlg", "test", [("name[A]", ["A is.", "There is A."])])),
    # CommonGen: concept lists joined as the local files' concept sets; hub test has no targets -> validation
    ("commongen", [{"concepts": ["dog", "ball"], "target": "A dog and a ball."},
                   {"concepts": ["dog", "ball"], "target": "The dog chases a ball."}], "test",
     ("allenai/common_gen", "validation", [("dog, ball", ["A dog and a ball.", "The dog chases a ball."])])),
    # HealthCareMagic: the hub has only `train`, so the last 1 % is the test split
    ("healthcaremagic", [{"instruction": "If you are a doctor...", "input": "My knee hurts.", "output": "Rest it."}],
     "test", ("lavita/ChatDoctor-HealthCareMagic-100k", "train[99%:]", [("My knee hurts.", ["Rest it."])])),
])
def test_hub_fallback_reads_fitting_splits_and_fields(monkeypatch, tmp_path, name, rows, split, expect):
    import datasets

    calls = []

    def fake_load(hub_id, config=None, split=None):  # no network here: the loader is stubbed
        calls.append((hub_id, split))
        return rows

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    dm = DATAMODULES[name](data_dir=str(tmp_path / "none"), allow_hub=True)
    ds = dm.dataset_for(split, "generate")
    hub_id, hub_split, groups = expect
    assert calls == [(hub_id, hub_split)] and dm.source_used == f"hub {hub_id}"
    assert [(s, r) for s, r in zip(ds["source"], ds["references"])] == groups


def test_source_continuation_rows(data_root):
    """Extra rows continue each distinct training source: prompt = its first k >= 16 tokens, target = the next
    ``continuation_tokens`` (no EOS), within max_source_tokens; seeded, so two modules build the same rows."""
    kw = dict(data_dir=str(data_root), max_train_samples=4, max_source_tokens=48, source_continuations=2,
              continuation_tokens=8)
    dm = DATAMODULES["xsum"](**kw)
    ds = dm.dataset_for("train", "train")
    plain = DATAMODULES["xsum"](data_dir=str(data_root), max_train_samples=4, max_source_tokens=48)
    n_task = len(plain.dataset_for("train", "train"))
    sources = list(dict.fromkeys(s for s, _ in dm.pairs("train")[:4]))
    extra = ds.select(range(n_task, len(ds)))
    assert ds.select(range(n_task))["input_ids"] == plain.dataset_for("train", "train")["input_ids"]
    assert len(extra) == 2 * len(sources)
    for row, src in zip(extra, [s for s in sources for _ in range(2)]):
        toks = dm.tokenizer(src, add_special_tokens=False)["input_ids"]
        k = sum(1 for x in row["labels"] if x == -100)
        assert 16 <= k and k + 8 == len(row["input_ids"]) <= 48
        assert row["input_ids"] == toks[:k + 8] and row["labels"][k:] == toks[k:k + 8]
        assert row["labels"][:k] == [-100] * k
    assert DATAMODULES["xsum"](**kw).dataset_for("train", "train")["labels"] == ds["labels"]
    b = next(iter(dm.train_dataloader()))  # task and continuation rows collate together
    assert b["input_ids"].shape == b["labels"].shape


def test_source_continuation_bad_settings(data_root):
    with pytest.raises(ValueError, match=r"source_continuations=-1 must be an integer >= 0"):
        DATAMODULES["xsum"](source_continuations=-1)
    with pytest.raises(ValueError, match=r"continuation_tokens=60 must lie in \[1, max_source_tokens - 16\] = "
                                         r"\[1, 48\].*raise data.init_args.max_source_tokens"):
        DATAMODULES["xsum"](max_source_tokens=64, source_continuations=1, continuation_tokens=60)
    dm = E2EDataModule(data_dir=str(data_root), max_train_samples=4, source_continuations=1, continuation_tokens=64)
    with pytest.raises(ValueError, match=r"e2e: no training source has 80 tokens, so source_continuations=1 adds "
                                         r"nothing; lower data.init_args.continuation_tokens"):
        dm.dataset_for("train", "train")
