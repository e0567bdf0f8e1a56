"""Train the bundled tiny checkpoints on the synthetic shapes benchmark (CPU, deterministic).

    python -m vtr_bench.tiny.train --model tiny_llava --out vtr_bench/assets/tiny_llava
    python -m vtr_bench.tiny.train --all          # every tiny model into vtr_bench/assets/<name>

The whole model (vision tower, projector, decoder) is trained with AdamW on streamed train samples; a share of
each batch asks "Describe the image." with a full caption as target (LLaVA's stage-1 alignment idea: pure QA
training plateaus). The loss covers only the target tokens. Afterwards the test split is scored with a batched
greedy loop and the numbers go to ``TRAINING.md`` next to the checkpoint.
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import time
from collections import Counter
from pathlib import Path

import torch
from tqdm import tqdm

from vtr_bench.models.tiny import ASSETS, PROMPT_TEMPLATE, build_tiny_internvl2, build_tiny_llava
from vtr_bench.tiny.data import CAPTION_QUESTION, QUESTION_TYPES, baselines, iter_train, render, split_samples

BUILDERS = {"tiny_llava": build_tiny_llava, "tiny_internvl2": build_tiny_internvl2}
HPARAMS = {
    "tiny_llava": {"steps": 3000, "batch_size": 32, "lr": 1e-3, "caption_share": 0.25},
    "tiny_internvl2": {"steps": 3000, "batch_size": 32, "lr": 1e-3, "caption_share": 0.25},
}


def make_batch(processor, samples: list[dict], caption_share: float, rng: random.Random) -> dict:
    """Tokenise prompt + target (right padding) and label only the target tokens.

    With probability ``caption_share`` a sample's target is its caption instead of its answer.
    """
    images, texts, n_target = [], [], []
    tok = processor.tokenizer
    for s in samples:
        question, answer = (CAPTION_QUESTION, s["caption"]) if rng.random() < caption_share else (s["question"], s["answer"])
        target = f" {answer}{tok.eos_token}"
        images.append(render(s["objects"]))
        texts.append(PROMPT_TEMPLATE.format(question=question) + target)
        n_target.append(len(tok(target, add_special_tokens=False).input_ids))
    batch = processor(images=images, text=texts, return_tensors="pt", padding=True, padding_side="right")
    labels = torch.full_like(batch["input_ids"], -100)
    for i, (length, n) in enumerate(zip(batch["attention_mask"].sum(1).tolist(), n_target)):
        labels[i, length - n:length] = batch["input_ids"][i, length - n:length]
    batch["labels"] = labels
    return dict(batch)


@torch.no_grad()
def evaluate(model, processor, samples: list[dict], batch_size: int = 50, max_new_tokens: int = 4) -> dict[str, float]:
    """Exact-match accuracy of batched greedy decoding (left padding), overall and per question type."""
    model.eval()
    hits: Counter = Counter()
    totals = Counter(s["qtype"] for s in samples)
    for i in range(0, len(samples), batch_size):
        chunk = samples[i:i + batch_size]
        batch = processor(images=[render(s["objects"]) for s in chunk], return_tensors="pt", padding=True,
                          text=[PROMPT_TEMPLATE.format(question=s["question"]) for s in chunk])
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
        answers = processor.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        for s, a in zip(chunk, answers):
            hits[s["qtype"]] += a.strip() == s["answer"]
    acc = {f"exact_match_{t}": hits[t] / totals[t] for t in QUESTION_TYPES}
    acc["exact_match"] = sum(hits.values()) / len(samples)
    return acc


def train(name: str, out: Path, steps: int, batch_size: int, lr: float, caption_share: float, seed: int = 0,
          threads: int = 1, eval_every: int = 0) -> dict:
    """Train tiny model ``name`` from scratch, save checkpoint + processor + TRAINING.md to ``out``; return metrics.

    ``eval_every`` > 0 prints the accuracy on the first 100 search samples every that many steps (not timed).
    """
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model, processor = BUILDERS[name](seed=seed)
    rng = random.Random(seed)
    stream = iter_train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    start = time.perf_counter()
    model.train()
    bar = tqdm(range(steps), desc=f"train {name}", mininterval=5)
    for step in bar:
        batch = make_batch(processor, list(itertools.islice(stream, batch_size)), caption_share, rng)
        loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        if eval_every and (step + 1) % eval_every == 0 and step + 1 < steps:
            paused = time.perf_counter()
            tqdm.write(f"step {step + 1}: loss {loss.item():.3f}, search[:100] "
                       f"{evaluate(model, processor, split_samples('search')[:100])}")
            model.train()
            start += time.perf_counter() - paused
    train_s = time.perf_counter() - start
    model.eval()
    acc = evaluate(model, processor, split_samples("test"))
    search_acc = evaluate(model, processor, split_samples("search"))["exact_match"]
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    metrics = {"train_seconds": train_s, "test": acc, "search_exact_match": search_acc,
               "baselines_test": baselines(split_samples("test")), "params": sum(p.numel() for p in model.parameters())}
    _write_report(out / "TRAINING.md", name, model, metrics, steps=steps, batch_size=batch_size, lr=lr,
                  caption_share=caption_share, seed=seed, threads=threads)
    return metrics


def _write_report(path: Path, name: str, model, metrics: dict, **hp) -> None:
    acc, base = metrics["test"], metrics["baselines_test"]
    text = model.config.text_config
    lines = [
        f"# {name}: training record",
        "",
        f"Command: `python -m vtr_bench.tiny.train --model {name} --out vtr_bench/assets/{name}`"
        f" (hyper-parameters: {', '.join(f'{k}={v}' for k, v in hp.items())}).",
        f"Machine: 2-core CPU, torch {torch.__version__}, {hp['threads']} thread(s), float32.",
        f"Training wall time: {metrics['train_seconds'] / 60:.1f} min ({hp['steps'] * hp['batch_size']} samples).",
        f"Model: {metrics['params'] / 1e6:.2f} M parameters; decoder {text.model_type}, {text.num_hidden_layers} layers, "
        f"hidden {text.hidden_size}; {model.config.image_seq_length} image tokens per image.",
        "",
        "Exact-match accuracy on the `shapes` test split (500 samples, greedy, batch 50, left padding):",
        "",
        "| metric | accuracy |",
        "|---|---|",
        *[f"| {k} | {v:.3f} |" for k, v in acc.items()],
        f"| search split (300), exact_match | {metrics['search_exact_match']:.3f} |",
        "",
        "Blind baselines on the test split (fitted on 20k train samples):",
        "",
        "| baseline | accuracy |",
        "|---|---|",
        f"| majority answer | {base['majority']:.3f} |",
        f"| majority answer per question type | {base['type_majority']:.3f} |",
        f"| text-only (most frequent answer per question text) | {base['text_only']:.3f} |",
        "",
    ]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--model", choices=sorted(BUILDERS))
    group.add_argument("--all", action="store_true", help="train every tiny model into vtr_bench/assets/<name>")
    parser.add_argument("--out", type=Path, help="output folder (default vtr_bench/assets/<model>)")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--caption-share", type=float)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-every", type=int, default=0, help="print search accuracy every N steps")
    args = parser.parse_args(argv)
    names = sorted(BUILDERS) if args.all else [args.model]
    for name in names:
        hp = dict(HPARAMS[name])
        hp.update({k: v for k, v in {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                                     "caption_share": args.caption_share}.items() if v is not None})
        out = args.out if args.out is not None and not args.all else ASSETS / name
        metrics = train(name, out, seed=args.seed, threads=args.threads, eval_every=args.eval_every, **hp)
        print(f"{name}: test exact_match {metrics['test']['exact_match']:.3f} "
              f"({metrics['train_seconds'] / 60:.1f} min) -> {out}")


if __name__ == "__main__":
    main()
