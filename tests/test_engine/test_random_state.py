"""vitzoo.engine.hooks.random_state: the generators a checkpoint carries, and batches seeded by position."""
import random

import numpy as np
import torch
from torch.utils.data import DataLoader

from vitzoo.engine.hooks.random_state import capture, restore, seed_batches


def draws() -> list:
    return [random.random(), random.gauss(0, 1), float(np.random.rand()), float(np.random.randn()),
            float(torch.rand(1)), float(torch.randn(1))]


def test_restore_repeats_every_generator_after_capture():
    random.gauss(0, 1)  # a cached gauss value is part of python's state
    np.random.randn()
    state = capture()
    first = draws()
    draws()  # move on
    restore(state)
    assert draws() == first
    torch.save(state, '/dev/null')  # plain values and tensors: weights_only loading can read them


class Noisy(torch.utils.data.Dataset):
    """An item is its index and three draws of each global generator (an augmentation)."""

    def __len__(self):
        return 12

    def __getitem__(self, index):
        return torch.tensor([index, random.random(), np.random.rand(), torch.rand(1).item()])


def loader(workers: int, seed: int = 7, start: int = 0) -> DataLoader:
    data = DataLoader(Noisy(), batch_size=4, shuffle=False, num_workers=workers)
    assert seed_batches(data, seed=seed, rank=0, first_position=lambda: start)
    return data


def test_a_batch_draws_the_same_numbers_in_any_worker_and_leaves_the_process_generators_alone():
    torch.manual_seed(0)
    state = capture()
    main = [batch for batch in loader(0)]
    after = draws()
    restore(state)
    assert after == draws()  # loading in the main process did not move the global generators
    workers = [batch for batch in loader(2)]
    assert all(torch.equal(a, b) for a, b in zip(main, workers, strict=True))
    assert len({tuple(b[:, 1].tolist()) for b in main}) == 3  # each batch draws its own numbers
    other_seed = [batch for batch in loader(0, seed=8)]
    assert not torch.equal(main[0], other_seed[0])


def test_a_resumed_stream_draws_what_the_uninterrupted_one_drew_at_that_position():
    """Resuming at sample 4 (the second batch) gives the second batch of the uninterrupted run."""
    uninterrupted = [batch for batch in loader(0)]
    resumed = iter(loader(0, start=4))
    assert torch.equal(next(resumed)[:, 1:], uninterrupted[1][:, 1:])
