"""How often the bundled models answer the same in half precision as in float32, with and without reduction.

For each model and method setting, the first ``--limit`` test questions of the ``shapes`` benchmark (its own
prompts) are answered by greedy decoding through the reduction engine once in float32 and once with the model cast
to ``--dtype``; the answers are compared one by one (``agreement``) and each run's exact-match accuracy is given.

    python -m vtr_bench.half_precision --out benchmarks/results     # both tiny models, 500 questions
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

SETTINGS = (("full", None, {}), ("fastv", 0.5, {"k": 1}), ("fastv", 0.25, {"k": 1}), ("pdrop", 0.3, {}),
            ("psigmoid", 0.3, {"k": 1.0, "alpha": 3.0}))
CONF = Path(__file__).resolve().parent / "conf"


def _method(name: str, overrides: dict):
    """The method of ``conf/method/<name>.yaml`` with ``overrides``, and its own position policy."""
    from omegaconf import OmegaConf

    from vtr_bench.run import instantiate_method

    node = OmegaConf.merge(OmegaConf.load(CONF / "method" / f"{name}.yaml"), overrides)
    return instantiate_method(node), str(node.get("positions", "keep"))


@torch.no_grad()
def answers(adapter, samples, schedule, scorer, positions: str, batch_size: int = 50,
            max_new_tokens: int = 8) -> list[str]:
    """Greedy answers of ``adapter`` with the engine for ``(image, prompt)`` samples."""
    from vtr_bench.eval.generate import greedy_generate

    tokenizer = adapter.processor.tokenizer
    engine = adapter.engine(schedule, scorer, positions=positions)
    out = []
    with engine.attached():
        for start in range(0, len(samples), batch_size):
            chunk = samples[start:start + batch_size]
            inputs = adapter.prepare([s[0] for s in chunk], [s[1] for s in chunk])
            result = greedy_generate(adapter.model, engine, inputs, adapter.vision_mask(inputs["input_ids"]),
                                     max_new_tokens, {tokenizer.eos_token_id})
            out += [tokenizer.decode(t, skip_special_tokens=True).strip() for t in result.tokens]
    return out


def agreement(model: str, dtype: str, limit: int, settings=SETTINGS) -> list[dict]:
    """One row per setting: answers agreeing between float32 and ``dtype``, and both accuracies."""
    from hydra import compose, initialize_config_dir

    from vtr_bench.bench import DTYPES
    from vtr_bench.models.loader import load_adapter
    from vtr_bench.search.data import load_search_samples, search_task

    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose("config", overrides=[f"model={model}"])
    adapter = load_adapter(cfg.model)
    layers = len(adapter.decoder_layers)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:  # the generated task data, for as long as the samples are read
        task = search_task("shapes", "shapes", scratch)
        _, samples = load_search_samples("shapes", "shapes", scratch, limit, task)
        targets = [str(task.eval_docs[i]["answer"]) for i in range(len(samples))]
        for name, budget, overrides in settings:
            method, positions = _method(name, overrides)
            schedule, scorer = method.build(layers, budget)
            adapter.model.to(torch.float32)
            reference = answers(adapter, samples, schedule, scorer, positions)
            adapter.model.to(DTYPES[dtype])
            half = answers(adapter, samples, schedule, scorer, positions)
            rows.append({"model": model, "method": name, "budget": budget, "params": overrides, "dtype": dtype,
                         "questions": len(samples),
                         "agreement": sum(a == b for a, b in zip(reference, half)) / len(half),
                         "accuracy_float32": _accuracy(reference, targets),
                         f"accuracy_{dtype}": _accuracy(half, targets)})
            print(f"vtr_bench: {model} {name} {budget}: agreement {rows[-1]['agreement']:.3f}", file=sys.stderr,
                  flush=True)
    return rows


def _accuracy(answers: list[str], targets: list[str]) -> float:
    """Exact match as the shapes task scores it (its own normalisation)."""
    from vtr_bench.tasks.shapes.utils import normalize_answer

    return sum(normalize_answer(a) == normalize_answer(t) for a, t in zip(answers, targets)) / len(targets)


def markdown(rows: list[dict]) -> str:
    dtype = rows[0]["dtype"]
    lines = [f"| model | method | budget | questions | answers equal to float32's | accuracy float32 | "
             f"accuracy {dtype} |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['method']} | {r['budget'] if r['budget'] is not None else '—'} | "
                     f"{r['questions']} | {r['agreement']:.3f} | {r['accuracy_float32']:.3f} | "
                     f"{r[f'accuracy_{dtype}']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vtr_bench.half_precision", description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny_llava", "tiny_internvl2"])
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    rows = [row for model in args.models for row in agreement(model, args.dtype, args.limit)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"half_precision_{args.dtype}.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / f"half_precision_{args.dtype}.md").write_text(markdown(rows))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
