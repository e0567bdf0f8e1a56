"""The synthetic shapes benchmark: determinism, disjoint splits, balance, and the local lmms-eval tasks."""

import hashlib
import itertools
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from vtr_bench.tasks.shapes import TASKS, materialize  # noqa: E402
from vtr_bench.tasks.shapes.utils import normalize_answer, process_results  # noqa: E402
from vtr_bench.tiny import data  # noqa: E402


def _pair_digest(sample: dict) -> str:
    return hashlib.sha256(data.render(sample["objects"]).tobytes() + sample["question"].encode()).hexdigest()


def test_generation_is_deterministic():
    first = [data.make_sample("test", i) for i in range(50)]
    again = [data.make_sample("test", i) for i in range(50)]
    assert first == again
    assert [_pair_digest(s) for s in first] == [_pair_digest(s) for s in again]


def test_splits_are_disjoint_and_sized():
    test, search = data.split_samples("test"), data.split_samples("search")
    train = list(itertools.islice(data.iter_train(), 3000))
    assert (len(test), len(search)) == (500, 300)
    digests = {name: {_pair_digest(s) for s in split} for name, split in
               {"test": test, "search": search, "train": train}.items()}
    assert not digests["test"] & digests["search"]
    assert not digests["train"] & (digests["test"] | digests["search"])


def test_splits_are_balanced_and_blind_baselines_are_weak():
    for split in ("test", "search"):
        samples = data.split_samples(split)
        per_type = {t: sum(s["qtype"] == t for s in samples) for t in data.QUESTION_TYPES}
        assert set(per_type.values()) == {len(samples) // len(data.QUESTION_TYPES)}
        exist = [s["answer"] for s in samples if s["qtype"] == "exist"]
        assert 0.3 < exist.count("yes") / len(exist) < 0.7  # yes/no drawn with probability 1/2 each
    base = data.baselines(data.split_samples("test"), train_size=5000)
    assert base["majority"] < 0.2 and base["type_majority"] < 0.4 and base["text_only"] < 0.4


def test_every_word_is_in_the_vocabulary():
    vocab = set(data.vocabulary())
    for s in itertools.islice(data.iter_train(), 2000):
        text = f"{s['question']} {s['caption']} {s['answer']} {data.CAPTION_QUESTION}"
        words = text.lower().replace("?", " ? ").replace(".", " . ").split()
        assert set(words) <= vocab, set(words) - vocab


def test_scoring_normalizes_and_breaks_down_by_type():
    doc = {"qtype": "exist", "answer": "yes"}
    assert normalize_answer(" Yes.</s>") == "yes"
    out = process_results(doc, [" yes</s>"])
    assert out["exact_match"] == 1.0 and out["exact_match_exist"] == {"score": 1.0}
    assert out["exact_match_count"] is None
    assert process_results(doc, ["yes no"])["exact_match"] == 0.0


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    return materialize(tmp_path_factory.mktemp("cache"))


def test_materialize_is_idempotent(task_dir):
    stamp = {p: p.stat().st_mtime_ns for p in task_dir.parent.rglob("*") if p.is_file()}
    assert materialize(task_dir.parent.parent) == task_dir
    assert {p: p.stat().st_mtime_ns for p in task_dir.parent.rglob("*") if p.is_file()} == stamp
    assert "dataset_path: \"/" in (task_dir / "shapes.yaml").read_text()


def test_lmms_eval_scores_known_answers(task_dir, monkeypatch):
    import importlib.util

    import lmms_eval.evaluator
    from lmms_eval.api.model import lmms
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    if importlib.util.find_spec("filelock._api") is None:
        # lmms-eval 0.7.3 patches filelock 3.x internals that filelock 4 removed; load_from_disk needs no locks.
        monkeypatch.setattr(lmms_eval.evaluator._enable_reentrant_filelocks, "_patched", True, raising=False)

    class HalfOracle(lmms):
        """Answers correctly (with an eos tail) for count/color questions and wrongly for the others."""

        def __init__(self):
            super().__init__()
            self.seen = []

        def generate_until(self, requests):
            out = []
            for req in requests:
                ctx, gen_kwargs, doc_to_visual, doc_id, task, split = req.args
                doc = self.task_dict[task][split][doc_id]
                self.seen.append((ctx, doc, doc_to_visual(doc), dict(gen_kwargs)))
                out.append(f" {doc['answer']}</s>" if doc["qtype"] in ("count", "color") else "purple")
            return out

        def loglikelihood(self, requests):
            raise NotImplementedError

        def generate_until_multi_round(self, requests):
            raise NotImplementedError

    model = HalfOracle()
    tm = TaskManager(include_path=str(task_dir), include_defaults=False)
    res = simple_evaluate(model=model, tasks=list(TASKS), task_manager=tm, limit=20, bootstrap_iters=0,
                          log_samples=False)
    for task in TASKS:
        r = res["results"][task]
        assert r["exact_match,none"] == pytest.approx(0.4)
        assert r["exact_match_count,none"] == 1.0 and r["exact_match_color,none"] == 1.0
        assert r["exact_match_shape,none"] == r["exact_match_position,none"] == r["exact_match_exist,none"] == 0.0
        assert res["n-samples"][task]["effective"] == 20
    ctx, doc, visuals, gen_kwargs = model.seen[0]
    assert ctx == doc["question"] and len(visuals) == 1 and visuals[0].size == (data.IMAGE_SIZE,) * 2
    assert gen_kwargs["max_new_tokens"] == 8 and gen_kwargs["until"] == ["</s>"] and not gen_kwargs["do_sample"]
    assert {d["id"].split("-")[0] for _, d, _, _ in model.seen} == {"test", "search"}
