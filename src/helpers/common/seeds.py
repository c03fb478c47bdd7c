"""Seeds derived from the study's one seed: one random generator per image, a stream of initializer seeds per network."""

from __future__ import annotations

import numpy as np

from helpers.common.checks import check_seed


def image_rng(seed: int, image_id: int, stream: int) -> np.random.Generator:
    """Random generator of one image: a function of (seed, image id, stream) only, so batching and model never change it."""
    return np.random.default_rng(np.random.SeedSequence([check_seed(seed), int(image_id), int(stream)]))


def seed_stream(seed: int | None, salt: int):
    """Distinct, reproducible initializer seeds for one network (None stays unseeded)."""
    counter = iter(range(1_000_000))
    return lambda: (
        None if seed is None else int(np.random.SeedSequence([int(seed), salt, next(counter)]).generate_state(1)[0])
    )
