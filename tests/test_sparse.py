"""The sparse benchmark (#24): determinism, disjoint balanced splits, sparse objects, geometry-true answers, the
local lmms-eval tasks end to end, and resumable deterministic training of its tiny model."""

import os
from collections import Counter

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from vtr_bench.tiny import sparse  # noqa: E402


def test_generation_is_deterministic():
    a, b = sparse.make_sample("test", 7), sparse.make_sample("test", 7)
    assert a == b and sparse.image(a).tobytes() == sparse.image(b).tobytes()
    assert sparse.make_sample("test", 7, attempt=1) != a
    assert sparse.image(a).size == (64, 64)


def test_splits_are_disjoint_balanced_and_blind_baselines_are_weak():
    test, search = sparse.split_samples("test"), sparse.split_samples("search")
    assert len(test) == 500 and len(search) == 300
    keys = [{sparse.sample_key(s) for s in split} for split in (test, search)]
    assert not keys[0] & keys[1]
    train = [s for _, s in zip(range(300), sparse.iter_train())]
    assert not {sparse.sample_key(s) for s in train} & (keys[0] | keys[1])
    assert Counter(s["qtype"] for s in test) == {t: 100 for t in sparse.QUESTION_TYPES}
    for qtype in ("relation", "exist"):
        answers = Counter(s["answer"] for s in test if s["qtype"] == qtype)
        assert set(answers) == {"yes", "no"} and min(answers.values()) >= 40
    blind = sparse.baselines(test, train_size=5000)
    assert blind["text_only"] < 0.45 and blind["majority"] < 0.25


def test_answers_follow_the_geometry_and_objects_are_sparse():
    """Relations are true of the pixel centres; objects are distinct, apart, and cover few of the 256 tokens."""
    covered = []
    for s in sparse.split_samples("test"):
        objs = s["objects"]
        assert 1 <= len(objs) <= 4 and len({(o.color, o.shape) for o in objs}) == len(objs)
        assert all(max(abs(a.x - b.x), abs(a.y - b.y)) >= sparse.MIN_GAP for a in objs for b in objs if a is not b)
        if s["qtype"] == "relation":
            rest = s["question"][len("Is the "):-1]
            relation = next(r for r in sparse.RELATIONS if f" {r} the " in rest)
            first, second = rest.split(f" {relation} the ")
            named = [[o for o in objs if n in (o.shape, f"{o.color} object")] for n in (first, second)]
            assert [len(n) for n in named] == [1, 1], s["question"]  # one attribute, unique in the scene
            (a,), (b,) = named
            axis, sign = sparse.RELATIONS[relation]
            assert (sign * (getattr(a, axis) - getattr(b, axis)) > 0) == (s["answer"] == "yes")
        if s["qtype"] == "exist":
            value = s["question"][len("Is there a "):-1].removesuffix(" object")
            present = {o.color for o in objs} | {o.shape for o in objs}
            assert (value in present) == (s["answer"] == "yes") and value in (*sparse.COLORS, *sparse.SHAPES)
        if s["qtype"] == "color":
            shape = s["question"].split()[-1][:-1]
            assert [o.color for o in objs if o.shape == shape] == [s["answer"]]
        targets = sparse.token_targets([s], 16)
        per_object = [int((targets["object"][0] == sparse.SHAPES.index(o.shape) + 1 +
                           list(sparse.COLORS).index(o.color) * len(sparse.SHAPES)).sum()) for o in objs]
        assert all(2 <= n <= 9 for n in per_object), per_object
        covered.append(sum(per_object) / 256)
    assert max(covered) <= 0.15 and sum(covered) / len(covered) < 0.06


def test_every_word_is_in_the_vocabulary():
    from vtr_bench.models.tiny import build_tokenizer

    tok = build_tokenizer(words=sparse.vocabulary())
    for s in sparse.split_samples("search")[:100]:
        for text in (s["question"], s["answer"], s["caption"], sparse.CAPTION_QUESTION):
            assert tok.unk_token_id not in tok(text).input_ids, text


def test_model_config_dims_are_the_builders():
    from test_configs import compose_config

    from vtr_bench.models.tiny import build_tiny_sparse_llava
    from vtr_bench.reduction.flops import DecoderDims
    from vtr_bench.run import dims_from_config

    model, _ = build_tiny_sparse_llava()
    cfg = compose_config("model=tiny_sparse_llava", "benchmark=sparse")
    assert dims_from_config(cfg.model) == DecoderDims.from_hf_config(model.config.text_config)
    assert model.config.image_seq_length == 256 and model.config.text_config.num_hidden_layers == 16
    assert cfg.search.task == "sparse_search" and cfg.search.local == "sparse"
    assert compose_config().search.task == "shapes_search"


def test_a_run_scores_the_sparse_task_through_lmms_eval(tmp_path):
    """FastV at 0.125 (K = 2 of 16 layers) on the random-init sparse model, through the local lmms-eval task."""
    import json

    from test_configs import compose_config

    from vtr_bench.run import run

    cfg = compose_config(
        "model=tiny_random_llava", "model.builder=tiny_sparse_llava", "model.builder_args.num_layers=16",
        "model.builder_args.hidden_size=96", "model.builder_args.intermediate_size=288", "model.dims.layers=16",
        "model.dims.hidden=96", "model.dims.ffn=288", "model.dims.vision_tokens=256", "benchmark=sparse",
        "benchmark.limit=10", "method=fastv", "budget=0.125", "logger=none", "run.show_progress=false",
        f"run.out_dir={tmp_path}")
    run(cfg)
    [path] = tmp_path.rglob("results.json")
    result = json.loads(path.read_text())
    metrics = result["metrics"]["sparse"]
    assert set(metrics) == {"exact_match"} | {f"exact_match_{t}" for t in sparse.QUESTION_TYPES}
    assert result["budget_achieved"] == pytest.approx(0.125)
    data_dir = next((tmp_path / "cache" / "tasks").glob("sparse-v*")) / "data"
    import datasets

    test = datasets.load_from_disk(str(data_dir))["test"]
    assert test[3]["question"] == sparse.split_samples("test")[3]["question"]
    assert test[3]["image"].tobytes() == sparse.image(sparse.split_samples("test")[3]).tobytes()


def test_training_resumes_where_it_stopped(tmp_path):
    """Training is deterministic (two unstopped runs: bitwise-equal weights); a run stopped after step 2 and resumed
    from its checkpoint ends where an unstopped run ends (to float rounding: the optimiser state reloaded); a
    checkpoint of other settings is refused."""
    from vtr_bench.tiny.train import fit

    hp = dict(vision_steps=2, steps=4, batch_size=2, lr=1e-3, caption_share=0.5, extra_questions=2,
              freeze_vision=True)
    straight, _, _ = fit("tiny_sparse_llava", **hp)
    again = dict(fit("tiny_sparse_llava", **hp)[0].named_parameters())
    assert all(torch.equal(weights, again[name]) for name, weights in straight.named_parameters())
    checkpoint = tmp_path / "state.pt"
    assert fit("tiny_sparse_llava", checkpoint=checkpoint, checkpoint_every=1, stop_at=2, **hp) is None
    assert torch.load(checkpoint, weights_only=False)["step"] == 2
    resumed, _, timings = fit("tiny_sparse_llava", checkpoint=checkpoint, **hp)
    assert timings["resumed"]
    resumed = dict(resumed.named_parameters())
    for name, weights in straight.named_parameters():
        torch.testing.assert_close(weights, resumed[name], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="other settings"):
        fit("tiny_sparse_llava", checkpoint=checkpoint, **{**hp, "lr": 2e-3})


def test_balanced_stage0_loss_weighs_object_tokens_as_all_background_together():
    """With ``balance_objects`` the colour / shape / object losses do not depend on how much background there is
    (duplicating background tokens changes nothing); row / column stay plain means; off, it is plain cross-entropy."""
    from vtr_bench.tiny.train import stage0_loss

    g = torch.Generator().manual_seed(0)
    logits = {k: torch.randn(10, 13, generator=g) for k in ("color", "shape", "object", "row")}
    targets = {k: torch.tensor([0, 0, 0, 0, 0, 0, 0, 3, 5, 2]) for k in logits}
    more = [0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]  # the background tokens twice
    dup = ({k: v[more] for k, v in logits.items()}, {k: v[more] for k, v in targets.items()})
    ce = torch.nn.functional.cross_entropy
    row = ce(logits["row"], targets["row"])
    by_hand = row + sum(ce(logits[k][7:], targets[k][7:]) + ce(logits[k][:7], targets[k][:7])
                        for k in ("color", "shape", "object"))
    torch.testing.assert_close(stage0_loss(logits, targets, balance_objects=True), by_hand)
    torch.testing.assert_close(stage0_loss(*dup, balance_objects=True) - ce(*[d["row"] for d in dup]), by_hand - row)
    assert stage0_loss(logits, targets) == sum(ce(logits[k], targets[k]) for k in logits)
