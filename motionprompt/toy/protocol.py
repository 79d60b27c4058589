"""Who sees which prompts and seeds: fixed before any guided result was looked at.

The toy level has 96 captions (3 shapes x 4 colours x 4 directions x 2 speeds). 24 of them, balanced
over colours, shapes, directions and speeds, are held out for evaluation: no discriminator is trained on
the model's clips for them. The other 72 alternate between the guiding discriminator's split and the independent one's, so the two
discriminators never share a generated prompt, a real clip or a sampling seed. Seed ranges are disjoint
from each other and from training (``train.train_seed`` stays below 2**37). Cases of one's own (prompt files,
seed lists: ``evaluate``, ``toy-disc``; read by ``evaluation.cases``) replace these; the defaults are what the README's tables used.
"""

from __future__ import annotations

import itertools

from .world import LEVELS, WorldSpec

SEEDS = {
    "eval": 1 << 40,  # sampling seeds of evaluated (plain, guided) pairs
    "eval_real": (1 << 40) + (1 << 30),  # real clips of the evaluation captions (distribution reference)
    "guide_real": 1 << 41,
    "guide_fake": (1 << 41) + (1 << 30),
    "independent_real": 1 << 42,
    "independent_fake": (1 << 42) + (1 << 30),
    "gate": 1 << 43,  # the quality gate's plain samples
    "token_train": 1 << 44,  # amortized token training (motionprompt.amortized): its z_t trajectories ...
    "token_val": (1 << 44) + (1 << 30),  # ... and its held-out validation
}
ROLES = ("guide", "independent")


def all_captions(spec: WorldSpec | None = None) -> list[str]:
    spec = spec or LEVELS["toy"]
    if spec.max_objects != 1 or len(spec.motions) != 1 or spec.textures != ("solid",) or spec.backgrounds != ("plain",):
        raise ValueError("caption splits are defined for single-object, plain, constant-motion levels")
    caps = []
    for shape, colour, direction, speed in itertools.product(spec.shapes, spec.colours, spec.directions, spec.speeds):
        article = "an" if colour[0] in "aeiou" else "a"
        caps.append(f"{article} {colour} {shape} {spec.motions[0]} {direction} {speed}")
    return sorted(caps)


def caption_split(spec: WorldSpec | None = None) -> dict[str, list[str]]:
    """24 held-out captions, balanced: each (colour, shape) twice, each (direction, speed) three times."""
    spec = spec or LEVELS["toy"]
    combos = list(itertools.product(spec.directions, spec.speeds))
    held = set()
    for ci, colour in enumerate(spec.colours):
        for si, shape in enumerate(spec.shapes):
            k = ci * len(spec.shapes) + si
            for direction, speed in (combos[k % len(combos)], combos[(k + len(combos) // 2) % len(combos)]):
                article = "an" if colour[0] in "aeiou" else "a"
                held.add(f"{article} {colour} {shape} {spec.motions[0]} {direction} {speed}")
    rest = [c for c in all_captions(spec) if c not in held]
    return {"eval": sorted(held), "guide": rest[0::2], "independent": rest[1::2]}


def seeds(kind: str, n: int) -> list[int]:
    return [SEEDS[kind] + i for i in range(n)]


def eval_pairs(n_prompts: int, n_seeds: int, spec: WorldSpec | None = None) -> list[tuple[str, int]]:
    """(prompt, seed) pairs of an evaluation: every prompt with the same seeds, prompts in split order."""
    prompts = caption_split(spec)["eval"][:n_prompts]
    return [(p, s) for p in prompts for s in seeds("eval", n_seeds)]
