"""Deterministic synthetic "sparse" benchmark: 1-4 small coloured shapes on a cluttered 64 px background.

Where ``shapes`` fills a 3 x 3 grid (an object covers ~16 of 144 vision tokens, and any few of them answer), here
a 64 px image gives a 16 x 16 grid of 256 vision tokens (patch 4) and each object is 8-10 px, a few tokens; the
background is grey texture with grey strokes, so only a small share of the tokens carries the answer. Questions
depend on one or two objects, each named by one attribute that only it has in the scene: ``color`` ("What
color is the circle?"), ``shape`` ("What shape is the red object?"), ``count``, ``relation`` ("Is the circle left
of the blue object?") and ``exist`` ("Is there a blue object?", "Is there a triangle?"). Captions name every
object with its coarse location (``red circle at 2 5``: row and column on an 8 x 8 grid). Samples are pure
functions of ``(split, index, attempt)`` (see :class:`~vtr_bench.tiny.data.Splits`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from vtr_bench.tiny.data import (COLORS, DIGITS, PLURALS, PUNCTUATION, SHAPES, Splits, ask_count, count_wording,
                                 draw_shape)

NAME = "sparse"
DATA_VERSION = "2"  # bump whenever generation changes: it names the materialised cache folder
IMAGE_SIZE = 64
LOCATIONS = 8  # captions name an object's row and column on an 8 x 8 grid (digits 0-7)
QUESTION_TYPES = ("color", "shape", "count", "relation", "exist")
MAX_OBJECTS = 4
CAPTION_QUESTION = "Describe the image."
SPLIT_SIZES = {"test": 500, "search": 300}
RELATIONS = {"left of": ("x", -1), "right of": ("x", 1), "above": ("y", -1), "below": ("y", 1)}
MIN_GAP = 14  # pixels between object centres (objects never share a token)
MIN_OFFSET = 6  # pixels along the asked axis for a relation question

_FIXED_WORDS = ("user assistant how many objects are there what color is the shape object yes no left right of "
                "above below a describe image at").split()
PAIRS = tuple((c, s) for c in COLORS for s in SHAPES)
"""Every (colour, shape) pair; a scene holds each at most once."""


def vocabulary() -> list[str]:
    """Return the sorted, de-duplicated word list of the benchmark (no special tokens)."""
    words = set(_FIXED_WORDS) | set(COLORS) | set(SHAPES) | set(PLURALS.values())
    return sorted(words) + list(PUNCTUATION) + list(DIGITS)


@dataclass(frozen=True, order=True)
class Obj:
    """One shape centred at pixel ``(x, y)`` of the 64 px canvas, ``size`` pixels wide."""

    y: int
    x: int
    color: str
    shape: str
    size: int

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    @property
    def location(self) -> tuple[int, int]:
        """(row, column) on the caption's 8 x 8 grid."""
        return self.y * LOCATIONS // IMAGE_SIZE, self.x * LOCATIONS // IMAGE_SIZE


def render(objects: tuple[Obj, ...], texture: int) -> Image.Image:
    """Draw the scene: seeded grey texture (blocks, pixel noise, strokes) under the objects."""
    rng = np.random.default_rng(texture)
    level = rng.integers(120, 190)
    blocks = rng.integers(-25, 26, size=(IMAGE_SIZE // 8, IMAGE_SIZE // 8)).repeat(8, 0).repeat(8, 1)
    grey = np.clip(level + blocks + rng.integers(-15, 16, size=(IMAGE_SIZE, IMAGE_SIZE)), 0, 255).astype(np.uint8)
    img = Image.fromarray(np.stack([grey] * 3, axis=-1), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(8, 15))):
        x0, y0, x1, y1 = (int(v) for v in rng.integers(0, IMAGE_SIZE, size=4))
        shade = int(rng.integers(60, 221))
        draw.line([(x0, y0), (x1, y1)], fill=(shade,) * 3, width=int(rng.integers(1, 3)))
    for o in objects:
        h = o.size / 2
        draw_shape(draw, [o.x - h, o.y - h, o.x + h - 1, o.y + h - 1], o.shape, COLORS[o.color])
    return img


def image(sample: dict) -> Image.Image:
    """The sample's rendered image."""
    return render(sample["objects"], sample["texture"])


def caption(objects: tuple[Obj, ...]) -> str:
    """``"2 objects : red circle at 1 5 , blue square at 6 2 ."``, objects in reading order of their locations."""
    parts = [f"{o.name} at {o.location[0]} {o.location[1]}" for o in sorted(objects, key=lambda o: (o.location, o))]
    return f"{len(objects)} {'object' if len(objects) == 1 else 'objects'} : " + " , ".join(parts) + " ."


def _place(rng: random.Random, attrs: list[tuple[str, str]]) -> tuple[Obj, ...] | None:
    """Objects of the given (colour, shape) pairs at random centres at least ``MIN_GAP`` apart (None: no room)."""
    objs: list[Obj] = []
    for color, shape in attrs:
        for _ in range(50):
            size = rng.randint(8, 10)
            x, y = rng.randint(6, IMAGE_SIZE - 7), rng.randint(6, IMAGE_SIZE - 7)
            if all(max(abs(x - o.x), abs(y - o.y)) >= MIN_GAP for o in objs):
                objs.append(Obj(y, x, color, shape, size))
                break
        else:
            return None
    return tuple(objs)


def _random_attrs(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """``n`` distinct (colour, shape) pairs, so that "the red circle" always names one object."""
    return rng.sample(PAIRS, n)


def _unique(objects: tuple[Obj, ...], by: str) -> list[Obj]:
    return [o for o in objects if sum(getattr(p, by) == getattr(o, by) for p in objects) == 1]


def references(o: Obj, objects: tuple[Obj, ...]) -> list[str]:
    """The one-attribute names of ``o`` that no other object of the scene shares ("circle", "red object")."""
    refs = [o.shape] if o in _unique(objects, "shape") else []
    return refs + ([f"{o.color} object"] if o in _unique(objects, "color") else [])


def ask(objects: tuple[Obj, ...], qtype: str, rng: random.Random) -> tuple[str, str] | None:
    """A random question of type ``qtype`` about the scene as (question, answer), or None if none fits.

    Objects are named by one attribute (a shape or a colour) that is unique in the scene, not by a conjunction
    ("the red circle"; data version 1)."""
    if qtype == "count":
        return ask_count(objects, rng)
    if qtype == "color":
        unique = _unique(objects, "shape")
        o = rng.choice(unique) if unique else None
        return (f"What color is the {o.shape}?", o.color) if o else None
    if qtype == "shape":
        unique = _unique(objects, "color")
        o = rng.choice(unique) if unique else None
        return (f"What shape is the {o.color} object?", o.shape) if o else None
    if qtype == "relation":
        relation = rng.choice(list(RELATIONS))
        axis, sign = RELATIONS[relation]
        refs = {o: references(o, objects) for o in objects}
        pairs = [(a, b) for a in objects for b in objects
                 if a is not b and refs[a] and refs[b] and abs(getattr(a, axis) - getattr(b, axis)) >= MIN_OFFSET]
        if not pairs:
            return None
        a, b = rng.choice(pairs)
        answer = "yes" if sign * (getattr(a, axis) - getattr(b, axis)) > 0 else "no"
        return f"Is the {rng.choice(refs[a])} {relation} the {rng.choice(refs[b])}?", answer
    by_color = rng.random() < 0.5
    present = {o.color if by_color else o.shape for o in objects}
    values = sorted(present) if rng.random() < 0.5 else sorted(set(COLORS if by_color else SHAPES) - present)
    if not values:
        return None
    value = rng.choice(values)
    return f"Is there a {value}{' object' if by_color else ''}?", "yes" if value in present else "no"


def _count_scene(rng: random.Random) -> tuple[tuple[Obj, ...] | None, str, str]:
    """A count question with a uniform answer: the scene is built around it."""
    variant = rng.choice(("all", "color", "shape"))
    if variant == "all":
        n = rng.randint(1, MAX_OBJECTS)
        return _place(rng, _random_attrs(rng, n)), count_wording(variant), str(n)
    k = rng.randint(0, 3)
    n = rng.randint(max(k, 1), MAX_OBJECTS)
    target = rng.choice(list(COLORS) if variant == "color" else SHAPES)
    field = 0 if variant == "color" else 1
    hits = [p for p in PAIRS if p[field] == target]  # 3 or 4 pairs: k <= 3 always fits
    misses = [p for p in PAIRS if p[field] != target]
    attrs = rng.sample(hits, k) + rng.sample(misses, n - k)
    rng.shuffle(attrs)
    return _place(rng, attrs), count_wording(variant, target), str(k)


def make_sample(split: str, index: int, attempt: int = 0) -> dict:
    """Sample ``index`` of ``split`` (id, qtype, question, answer, caption, objects, texture); the type is
    ``QUESTION_TYPES[index % 5]``; yes/no answers are drawn half and half."""
    rng = random.Random(f"sparse/{split}/{index}/{attempt}")
    qtype = QUESTION_TYPES[index % len(QUESTION_TYPES)]
    want = rng.choice(("yes", "no")) if qtype in ("relation", "exist") else None
    while True:
        if qtype == "count":
            objs, question, answer = _count_scene(rng)
        else:
            objs = _place(rng, _random_attrs(rng, rng.randint(2 if qtype == "relation" else 1, MAX_OBJECTS)))
            qa = ask(objs, qtype, rng) if objs else None
            question, answer = qa if qa else ("", "")
        if objs and question and (want is None or answer == want):
            break
    return {"id": f"{split}-{index}", "qtype": qtype, "question": question, "answer": answer,
            "caption": caption(objs), "objects": objs, "texture": rng.randrange(2**32)}


def sample_key(sample: dict) -> tuple:
    """Identity of an (image, question) pair (the texture aside, the objects make the image)."""
    return tuple(sorted(sample["objects"])), sample["question"]


SPLITS = Splits(make_sample, SPLIT_SIZES, sample_key)
split_samples = SPLITS.samples
iter_train = SPLITS.train
baselines = SPLITS.baselines

TOKEN_CLASSES = {"color": len(COLORS) + 1, "shape": len(SHAPES) + 1, "object": len(COLORS) * len(SHAPES) + 1,
                 "row": LOCATIONS, "col": LOCATIONS}
"""Per-token targets of vision pretraining (:func:`token_targets`) and their number of classes."""


def token_targets(samples: list[dict], side: int) -> dict[str, torch.Tensor]:
    """Per-token labels on a ``side`` x ``side`` grid: colour, shape and (colour, shape) object (0 = background) of
    the object whose box holds the token's centre, and the token's row and column on the 8 x 8 location grid."""
    step = IMAGE_SIZE / side
    centres = (torch.arange(side) + 0.5) * step
    loc = (centres * LOCATIONS / IMAGE_SIZE).long()
    n = len(samples)
    out = {"row": loc.view(1, side, 1).expand(n, side, side), "col": loc.view(1, 1, side).expand(n, side, side)}
    for k in ("color", "shape", "object"):
        out[k] = torch.zeros(n, side, side, dtype=torch.long)
    for i, s in enumerate(samples):
        for o in s["objects"]:
            h = o.size / 2
            rows = ((centres >= o.y - h) & (centres < o.y + h)).view(side, 1)
            cols = ((centres >= o.x - h) & (centres < o.x + h)).view(1, side)
            inside = rows & cols
            color, shape = list(COLORS).index(o.color), SHAPES.index(o.shape)
            out["color"][i][inside] = color + 1
            out["shape"][i][inside] = shape + 1
            out["object"][i][inside] = color * len(SHAPES) + shape + 1
    return out
