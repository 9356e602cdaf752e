"""Workload: synthetic, jsonl and hf requests, and batching."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lem.models.tiny import build_tokenizer
from lem.workload.requests import (
    SAMPLE_PROMPTS,
    Request,
    WorkloadError,
    build_requests,
    make_batches,
    read_jsonl,
)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(0)


def _synthetic(compose, *overrides):
    return compose(["dataset=synthetic", *overrides]).dataset


def test_synthetic_requests_have_exact_lengths(compose, tokenizer):
    d = _synthetic(compose, "dataset.num_requests=5", "dataset.input_len=37",
                   "dataset.output_len=11")
    requests = build_requests(d, len(tokenizer), tokenizer)
    assert [r.index for r in requests] == [0, 1, 2, 3, 4]
    assert all(r.input_len == 37 and len(r.prompt_ids) == 37 for r in requests)
    assert all(r.output_len == 11 for r in requests)


def test_synthetic_requests_are_identical_for_the_same_seed(compose, tokenizer):
    d = _synthetic(compose, "dataset.seed=7")
    a = build_requests(d, len(tokenizer), tokenizer)
    b = build_requests(d, len(tokenizer), tokenizer)
    assert [r.prompt_ids for r in a] == [r.prompt_ids for r in b]


def test_synthetic_requests_differ_for_another_seed(compose, tokenizer):
    a = build_requests(_synthetic(compose, "dataset.seed=0"), len(tokenizer), tokenizer)
    b = build_requests(_synthetic(compose, "dataset.seed=1"), len(tokenizer), tokenizer)
    assert [r.prompt_ids for r in a] != [r.prompt_ids for r in b]


def test_synthetic_requests_never_contain_special_ids(compose, tokenizer):
    # a vocabulary of 8 ids, half of them special: any leak would show at once
    d = _synthetic(compose, "dataset.num_requests=20", "dataset.input_len=50")
    requests = build_requests(d, 8, tokenizer)
    used = {t for r in requests for t in r.prompt_ids}
    assert used == set(range(8)) - set(tokenizer.all_special_ids)


def test_synthetic_requests_without_a_tokenizer_use_the_whole_vocabulary(compose):
    d = _synthetic(compose, "dataset.num_requests=20", "dataset.input_len=50")
    used = {t for r in build_requests(d, 8) for t in r.prompt_ids}
    assert used == set(range(8))


@pytest.mark.parametrize("dist", ["uniform", "normal"])
def test_length_distributions_are_seeded_and_clipped_to_at_least_1(compose, tokenizer, dist):
    overrides = ["dataset.num_requests=200", "dataset.input_len=3", "dataset.input_len_spread=10",
                 f"dataset.input_len_dist={dist}", "dataset.output_len=5",
                 "dataset.output_len_spread=20", f"dataset.output_len_dist={dist}"]
    d = _synthetic(compose, *overrides)
    a = build_requests(d, len(tokenizer), tokenizer)
    b = build_requests(d, len(tokenizer), tokenizer)
    in_lens, out_lens = [r.input_len for r in a], [r.output_len for r in a]
    assert in_lens == [r.input_len for r in b] and out_lens == [r.output_len for r in b]
    assert min(in_lens) == 1 and min(out_lens) == 1  # clipped, not negative or zero
    assert len(set(in_lens)) > 5 and len(set(out_lens)) > 5


def test_uniform_lengths_stay_within_the_spread(compose, tokenizer):
    d = _synthetic(compose, "dataset.num_requests=200", "dataset.input_len=50",
                   "dataset.input_len_dist=uniform", "dataset.input_len_spread=5")
    lens = [r.input_len for r in build_requests(d, len(tokenizer), tokenizer)]
    assert min(lens) >= 45 and max(lens) <= 55
    assert {45, 55} <= set(lens)


def test_jsonl_reads_the_bundled_sample(compose, tokenizer):
    d = compose(["dataset=jsonl", "dataset.num_requests=1000"]).dataset
    requests = build_requests(d, len(tokenizer), tokenizer)
    lines = [json.loads(x) for x in SAMPLE_PROMPTS.read_text().splitlines() if x.strip()]
    assert len(requests) == len(lines)
    assert [r.prompt_ids for r in requests] == [tokenizer(x["prompt"])["input_ids"] for x in lines]


def test_jsonl_honours_per_record_output_len(compose, tokenizer):
    d = compose(["dataset=jsonl", "dataset.num_requests=1000", "dataset.output_len=7"]).dataset
    requests = build_requests(d, len(tokenizer), tokenizer)
    lines = [json.loads(x) for x in SAMPLE_PROMPTS.read_text().splitlines() if x.strip()]
    assert any("output_len" in x for x in lines)  # the sample exercises both cases
    assert [r.output_len for r in requests] == [x.get("output_len", 7) for x in lines]


def test_jsonl_takes_the_first_num_requests(compose, tokenizer):
    d = compose(["dataset=jsonl", "dataset.num_requests=3"]).dataset
    assert [r.index for r in build_requests(d, len(tokenizer), tokenizer)] == [0, 1, 2]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_malformed_line_names_file_and_line(tmp_path):
    lines = ['{"prompt": "a"}', "", '{"prompt": "b"', '{"prompt": "c"}']  # line 3 is cut short
    path = _write(tmp_path / "bad.jsonl", lines)
    with pytest.raises(WorkloadError, match=r"bad\.jsonl:3"):
        read_jsonl(path, "prompt")


def test_jsonl_missing_text_field_names_the_field(tmp_path):
    path = _write(tmp_path / "p.jsonl", ['{"prompt": "a"}', '{"text": "b"}'])
    with pytest.raises(WorkloadError, match=r"p\.jsonl:2.*'prompt'"):
        read_jsonl(path, "prompt")


def test_jsonl_custom_text_field(tmp_path):
    path = _write(tmp_path / "p.jsonl", ['{"text": "a", "output_len": 4}', '{"text": "b"}'])
    assert read_jsonl(path, "text") == [{"text": "a", "output_len": 4},
                                        {"text": "b", "output_len": None}]


@pytest.mark.parametrize("value", ["0", "-1", "2.5", '"8"'])
def test_jsonl_bad_output_len_is_rejected(tmp_path, value):
    path = _write(tmp_path / "p.jsonl", [f'{{"prompt": "a", "output_len": {value}}}'])
    with pytest.raises(WorkloadError, match=r"p\.jsonl:1: output_len="):
        read_jsonl(path, "prompt")


def test_jsonl_missing_file_and_empty_file(tmp_path):
    with pytest.raises(WorkloadError, match="does not exist"):
        read_jsonl(tmp_path / "nope.jsonl", "prompt")
    with pytest.raises(WorkloadError, match="no records"):
        read_jsonl(_write(tmp_path / "empty.jsonl", ["", ""]), "prompt")


def test_text_dataset_without_a_tokenizer_is_an_error(compose):
    with pytest.raises(WorkloadError, match="dataset=jsonl"):
        build_requests(compose(["dataset=jsonl"]).dataset, 1024, None)


def test_hf_dataset_from_a_save_to_disk_directory(compose, tokenizer, tmp_path):
    datasets = pytest.importorskip("datasets", reason="the datasets package is not installed")
    texts = ["the energy of a token", "a model and a joule", "kalo mine", "ruta shi"]
    datasets.Dataset.from_dict({"prompt": texts, "output_len": [5, 6, 7, 8]}).save_to_disk(
        str(tmp_path / "ds"))
    d = compose(["dataset=hf", f"dataset.path='{tmp_path / 'ds'}'",
                 "dataset.num_requests=3"]).dataset
    requests = build_requests(d, len(tokenizer), tokenizer)
    assert [r.prompt_ids for r in requests] == [tokenizer(t)["input_ids"] for t in texts[:3]]
    assert [r.output_len for r in requests] == [5, 6, 7]


def test_hf_dataset_without_output_len_uses_the_default(compose, tokenizer, tmp_path):
    datasets = pytest.importorskip("datasets", reason="the datasets package is not installed")
    datasets.Dataset.from_dict({"text": ["a b", "c d"]}).save_to_disk(str(tmp_path / "ds"))
    d = compose(["dataset=hf", f"dataset.path='{tmp_path / 'ds'}'", "dataset.text_field=text",
                 "dataset.output_len=9"]).dataset
    assert [r.output_len for r in build_requests(d, len(tokenizer), tokenizer)] == [9, 9]


def test_hf_dataset_unknown_column_names_the_field(compose, tokenizer, tmp_path):
    datasets = pytest.importorskip("datasets", reason="the datasets package is not installed")
    datasets.Dataset.from_dict({"text": ["a b"]}).save_to_disk(str(tmp_path / "ds"))
    d = compose(["dataset=hf", f"dataset.path='{tmp_path / 'ds'}'"]).dataset
    with pytest.raises(WorkloadError, match="dataset.text_field=prompt"):
        build_requests(d, len(tokenizer), tokenizer)


def _requests(lengths: list[int]) -> list[Request]:
    return [Request(i, [5] * n, 4) for i, n in enumerate(lengths)]


def test_static_batches_keep_dataset_order():
    batches = make_batches(_requests([3, 9, 1, 7, 5, 2, 8, 4, 6, 10]), "static", 4)
    assert [[r.index for r in b] for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_sorted_batches_put_longest_prompts_first_and_keep_every_request():
    requests = _requests([3, 9, 1, 7, 5, 2, 8, 4, 6, 10, 5])
    batches = make_batches(requests, "sorted", 4)
    flat = [r for b in batches for r in b]
    lengths = [r.input_len for r in flat]
    assert lengths == sorted(lengths, reverse=True)
    assert sorted(r.index for r in flat) == list(range(len(requests)))
    assert [len(b) for b in batches] == [4, 4, 3]


def test_batch_size_larger_than_the_dataset_gives_one_batch():
    assert [len(b) for b in make_batches(_requests([1, 2, 3]), "sorted", 16)] == [3]
