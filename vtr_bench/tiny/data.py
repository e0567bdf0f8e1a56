"""Deterministic synthetic "shapes" benchmark: coloured shapes on a 3x3 grid with short-answer questions.

Every sample is a pure function of ``(split, index, attempt)``: its random generator is seeded with that string,
so generating a split twice gives identical images and questions. The ``train`` split is unbounded (a stream);
``search`` and ``test`` are fixed lists. A train sample whose (scene, question) pair also occurs in ``search`` or
``test``, or a search sample found in ``test``, is redrawn with the next ``attempt``, so splits never overlap and
every split cycles exactly through the question types.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from PIL import Image, ImageDraw

NAME = "shapes"
DATA_VERSION = "3"  # bump whenever generation changes: it names the materialised cache folder
IMAGE_SIZE = 48
GRID = 3
COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 230), "yellow": (235, 200, 30)}
SHAPES = ("circle", "square", "triangle")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles"}
ROWS = ("top", "middle", "bottom")
COLS = ("left", "center", "right")
QUESTION_TYPES = ("count", "color", "shape", "position", "exist")
MAX_OBJECTS = 5
CAPTION_QUESTION = "Describe the image."
BACKGROUND = (245, 245, 245)

SPLIT_SIZES = {"test": 500, "search": 300}

# Every word the questions, answers and captions can contain (lower-cased), plus prompt words and digits.
_FIXED_WORDS = (
    "user assistant how many objects are there what color is the object in cell shape which row column "
    "a describe image yes no"
).split()
PUNCTUATION = (":", "?", ".", ",")
DIGITS = tuple(str(i) for i in range(10))


def vocabulary() -> list[str]:
    """Return the sorted, de-duplicated word list of the benchmark (no special tokens)."""
    words = set(_FIXED_WORDS) | set(COLORS) | set(SHAPES) | set(PLURALS.values()) | set(ROWS) | set(COLS)
    return sorted(words) + list(PUNCTUATION) + list(DIGITS)


@dataclass(frozen=True)
class Obj:
    """One shape in a grid cell; ``size``/``dx``/``dy`` jitter its rendering in pixels of a 48 px canvas."""

    row: int
    col: int
    color: str
    shape: str
    size: int
    dx: int
    dy: int


def render(objects: tuple[Obj, ...], image_size: int = IMAGE_SIZE) -> Image.Image:
    """Draw the scene as an RGB image of ``image_size`` pixels (coordinates are scaled from 48 px)."""
    scale = image_size / IMAGE_SIZE
    img = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(img)
    cell = IMAGE_SIZE / GRID
    for o in objects:
        cx = (o.col + 0.5) * cell + o.dx
        cy = (o.row + 0.5) * cell + o.dy
        h = o.size / 2
        draw_shape(draw, [(cx - h) * scale, (cy - h) * scale, (cx + h) * scale - 1, (cy + h) * scale - 1], o.shape,
                   COLORS[o.color])
    return img


def draw_shape(draw: ImageDraw.ImageDraw, box: list[float], shape: str, fill: tuple[int, int, int]) -> None:
    """Draw a filled circle, square or (upward) triangle in ``box`` = [x0, y0, x1, y1] (shapes and sparse)."""
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([((box[0] + box[2]) / 2, box[1]), (box[0], box[3]), (box[2], box[3])], fill=fill)


def caption(objects: tuple[Obj, ...]) -> str:
    """Caption naming each object after its cell, in reading order: ``"2 objects : top left red circle , ..."``.

    The cell comes first so that every colour and shape token is predicted from a stated location.
    """
    parts = [f"{ROWS[o.row]} {COLS[o.col]} {o.color} {o.shape}" for o in sorted(objects, key=lambda o: (o.row, o.col))]
    noun = "object" if len(objects) == 1 else "objects"
    return f"{len(objects)} {noun} : " + " , ".join(parts) + " ."


def _random_objects(rng: random.Random, n: int, attrs: list[tuple[str, str]] | None = None) -> tuple[Obj, ...]:
    """Place ``n`` objects in distinct random cells; ``attrs`` optionally fixes their (color, shape) pairs."""
    cells = rng.sample(range(GRID * GRID), n)
    objs = []
    for i, c in enumerate(cells):
        color, shape = attrs[i] if attrs else (rng.choice(list(COLORS)), rng.choice(SHAPES))
        objs.append(Obj(c // GRID, c % GRID, color, shape, rng.randint(11, 14), rng.randint(-1, 1), rng.randint(-1, 1)))
    return tuple(objs)


def count_wording(variant: str, target: str = "") -> str:
    """The count question of ``variant``: all objects, the objects of colour ``target``, or the shapes ``target``."""
    if variant == "all":
        return "How many objects are there?"
    if variant == "color":
        return f"How many {target} objects are there?"
    return f"How many {PLURALS[target]} are there?"


def _count_question(rng: random.Random) -> tuple[tuple[Obj, ...], str, str]:
    variant = rng.choice(("all", "color", "shape"))
    if variant == "all":
        n = rng.randint(1, MAX_OBJECTS)
        return _random_objects(rng, n), count_wording(variant), str(n)
    k = rng.randint(0, 4)
    n = rng.randint(max(k, 1), MAX_OBJECTS)
    if variant == "color":
        target = rng.choice(list(COLORS))
        others = [c for c in COLORS if c != target]
        attrs = [(target if i < k else rng.choice(others), rng.choice(SHAPES)) for i in range(n)]
    else:
        target = rng.choice(SHAPES)
        others = [s for s in SHAPES if s != target]
        attrs = [(rng.choice(list(COLORS)), target if i < k else rng.choice(others)) for i in range(n)]
    rng.shuffle(attrs)
    return _random_objects(rng, n, attrs), count_wording(variant, target), str(k)


def ask_count(objects: tuple, rng: random.Random) -> tuple[str, str]:
    """A random count question (all objects, a colour or a shape) about objects with ``color`` / ``shape``."""
    variant = rng.choice(("all", "color", "shape"))
    if variant == "all":
        return count_wording(variant), str(len(objects))
    target = rng.choice(list(COLORS) if variant == "color" else SHAPES)
    return count_wording(variant, target), str(sum(getattr(o, variant) == target for o in objects))


def ask(objects: tuple[Obj, ...], qtype: str, rng: random.Random) -> tuple[str, str] | None:
    """Ask a random question of type ``qtype`` about a given scene; return (question, answer), or None if none fits.

    Used for the balanced samples of every split (except ``count``, whose scenes are built per answer) and for
    the extra conversation turns of training.
    """
    if qtype == "count":
        return ask_count(objects, rng)
    if qtype in ("color", "shape"):
        o = rng.choice(objects)
        if qtype == "color":
            return f"What color is the object in the {ROWS[o.row]} {COLS[o.col]} cell?", o.color
        return f"What shape is in the {ROWS[o.row]} {COLS[o.col]} cell?", o.shape
    if qtype == "position":
        by = rng.choice(("color", "shape"))
        unique = [o for o in objects if sum(getattr(p, by) == getattr(o, by) for p in objects) == 1]
        if not unique:
            return None
        o = rng.choice(unique)
        name = f"{o.color} object" if by == "color" else o.shape
        if rng.random() < 0.5:
            return f"Which row is the {name} in?", ROWS[o.row]
        return f"Which column is the {name} in?", COLS[o.col]
    by = rng.choice(("color", "shape"))
    present = {getattr(o, by) for o in objects}
    choices = sorted(present) if rng.random() < 0.5 else sorted(set(COLORS if by == "color" else SHAPES) - present)
    if not choices:
        return None
    target = rng.choice(choices)
    answer = "yes" if target in present else "no"
    return (f"Is there a {target} object?" if by == "color" else f"Is there a {target}?"), answer


def _asked_question(qtype: str):
    def make(rng: random.Random) -> tuple[tuple[Obj, ...], str, str]:
        while True:
            objs = _random_objects(rng, rng.randint(1, MAX_OBJECTS))
            qa = ask(objs, qtype, rng)
            if qa is not None:
                return (objs, *qa)
    return make


_MAKERS = {"count": _count_question, **{t: _asked_question(t) for t in ("color", "shape", "position", "exist")}}


def make_sample(split: str, index: int, attempt: int = 0) -> dict:
    """Build sample ``index`` of ``split`` as a dict (id, qtype, question, answer, caption, objects; no image).

    The question type is ``QUESTION_TYPES[index % 5]``, so every split is balanced across types; ``attempt``
    redraws the sample with another seed.
    """
    rng = random.Random(f"{split}/{index}/{attempt}")
    qtype = QUESTION_TYPES[index % len(QUESTION_TYPES)]
    objs, question, answer = _MAKERS[qtype](rng)
    return {"id": f"{split}-{index}", "qtype": qtype, "question": question, "answer": answer,
            "caption": caption(objs), "objects": objs}


def sample_key(sample: dict) -> tuple:
    """Identity of an (image, question) pair: the rendered image is a pure function of the objects."""
    return (tuple(sorted(sample["objects"], key=lambda o: (o.row, o.col))), sample["question"])


class Splits:
    """The fixed ``test`` / ``search`` lists and the unbounded ``train`` stream of a sample generator.

    ``make(split, index, attempt)`` builds one sample; ``key(sample)`` is its (image, question) identity. A search
    sample found in test, or a train sample found in either, is redrawn with the next ``attempt``, so the splits
    never overlap (shared by the shapes and sparse benchmarks).
    """

    def __init__(self, make: Callable[[str, int, int], dict], sizes: dict[str, int], key: Callable[[dict], tuple]):
        self.make, self.sizes, self.key = make, sizes, key
        self._cache: dict[str, list[dict]] = {}

    def _draw(self, split: str, index: int, exclude: set) -> dict:
        attempt = 0
        while self.key(s := self.make(split, index, attempt)) in exclude:
            attempt += 1
        return s

    def samples(self, split: str) -> list[dict]:
        """Return the fixed ``test`` or ``search`` split; search excludes pairs found in test."""
        if split not in self._cache:
            if split == "test":
                exclude = set()
            elif split == "search":
                exclude = {self.key(s) for s in self.samples("test")}
            else:
                raise ValueError(f"unknown fixed split {split!r}; use 'test' or 'search' (train is iter_train())")
            self._cache[split] = [self._draw(split, i, exclude) for i in range(self.sizes[split])]
        return self._cache[split]

    def train(self, start: int = 0) -> Iterator[dict]:
        """Yield train samples from index ``start`` on, none sharing an (image, question) pair with search or test."""
        exclude = {self.key(s) for split in ("test", "search") for s in self.samples(split)}
        for index in itertools.count(start):
            yield self._draw("train", index, exclude)

    def baselines(self, samples: list[dict], train_size: int = 20_000) -> dict[str, float]:
        """Accuracy of blind baselines on ``samples``, fitted on the first ``train_size`` train samples.

        ``majority``: always the most frequent training answer. ``type_majority``: the most frequent training answer
        of the question's type. ``text_only``: the most frequent training answer for the exact question text
        (falling back to the type's majority), i.e. the best a model can do from the question alone.
        """
        overall: Counter = Counter()
        by_type: dict[str, Counter] = {}
        by_question: dict[str, Counter] = {}
        for s in itertools.islice(self.train(), train_size):
            overall[s["answer"]] += 1
            by_type.setdefault(s["qtype"], Counter())[s["answer"]] += 1
            by_question.setdefault(s["question"], Counter())[s["answer"]] += 1
        top = overall.most_common(1)[0][0]
        hits = {"majority": 0, "type_majority": 0, "text_only": 0}
        for s in samples:
            hits["majority"] += top == s["answer"]
            hits["type_majority"] += by_type[s["qtype"]].most_common(1)[0][0] == s["answer"]
            guess = (by_question.get(s["question"]) or by_type[s["qtype"]]).most_common(1)[0][0]
            hits["text_only"] += guess == s["answer"]
        return {k: v / len(samples) for k, v in hits.items()}


SPLITS = Splits(make_sample, SPLIT_SIZES, sample_key)
split_samples = SPLITS.samples
iter_train = SPLITS.train
baselines = SPLITS.baselines


def image(sample: dict) -> Image.Image:
    """The sample's rendered image."""
    return render(sample["objects"])


TOKEN_CLASSES = {"color": len(COLORS) + 1, "shape": len(SHAPES) + 1, "object": len(COLORS) * len(SHAPES) + 1,
                 "row": GRID, "col": GRID}
"""Per-token targets of vision pretraining (:func:`token_targets`) and their number of classes."""


def token_targets(samples: list[dict], side: int) -> dict[str, torch.Tensor]:
    """Per-token labels on a ``side`` x ``side`` token grid: the colour, the shape and the (colour, shape) object
    (0 = empty) of the token's grid cell, and the cell's row and column."""
    cell = torch.arange(side) * GRID // side
    out = {"row": cell.view(1, side, 1).expand(len(samples), side, side),
           "col": cell.view(1, 1, side).expand(len(samples), side, side)}
    grids = {k: torch.zeros(len(samples), GRID, GRID, dtype=torch.long) for k in ("color", "shape", "object")}
    for i, s in enumerate(samples):
        for o in s["objects"]:
            color, shape = list(COLORS).index(o.color), SHAPES.index(o.shape)
            grids["color"][i, o.row, o.col] = color + 1
            grids["shape"][i, o.row, o.col] = shape + 1
            grids["object"][i, o.row, o.col] = color * len(SHAPES) + shape + 1
    for k, g in grids.items():
        out[k] = g[:, cell][:, :, cell]
    return out
