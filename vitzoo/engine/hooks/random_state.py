"""The random state of a training run, kept so that a resumed run repeats the uninterrupted one.

A run draws random numbers from three places:

* the process's generators (python ``random``, numpy's global one, torch's CPU and CUDA ones):
  dropout, drop-path, batch augmentations of the data preprocessor. Checkpoints carry them, one
  set per rank (:func:`capture`, :func:`restore`).
* the data pipeline (crops, flips), in the data-loader workers or, with ``num_workers=0``, in the
  main process. Workers die with the run and MMEngine seeds them alike at every start, so each
  epoch replays one stream and a resumed run restarts it. Instead, every batch here draws from
  generators seeded by (run seed, rank, position of its first sample in the rank's sample
  stream), whichever worker loads it, persistent or not, resumed or not; in the main process these
  draws are forked off the process's generators and leave them as they were
  (:func:`seed_batches`).
* the samplers, seeded by the run seed and the epoch: deterministic once the seed is known, which
  checkpoints carry too (it is drawn at random when ``randomness.seed`` is None).
"""
import random
from contextlib import contextmanager
from typing import Callable, Iterator, List, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader


def capture() -> dict:
    """The state of python's, numpy's and torch's (CPU and CUDA) global generators."""
    version, keys, gauss = random.getstate()
    kind, np_keys, pos, has_gauss, cached = np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    # Plain python values and tensors only, so that ``torch.load(weights_only=True)`` reads them.
    return dict(python=[version, list(keys), gauss],
                numpy=[kind, np_keys.tolist(), int(pos), int(has_gauss), float(cached)],
                torch=torch.get_rng_state(), cuda=cuda)


def restore(state: dict) -> None:
    """Set the global generators to ``state`` (from :func:`capture`)."""
    version, keys, gauss = state['python']
    random.setstate((version, tuple(keys), gauss))
    kind, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state['torch'])
    if state['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


@contextmanager
def _forked_cpu_generators(seed: int):
    """Run the body with python's, numpy's and torch's CPU generators seeded by ``seed``, then put
    back the states they had."""
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])


class PositionedIndex(int):
    """A dataset index that also knows its position in the rank's sample stream."""

    def __new__(cls, index: int, position: int):
        obj = super().__new__(cls, index)
        obj.position = position
        return obj

    def __reduce__(self):
        return PositionedIndex, (int(self), self.position)


class PositionedSampler:
    """Wraps a sampler; its indices carry their stream position, counted from ``first_position()``
    (read when an epoch's iteration starts). Everything else is the wrapped sampler's."""

    def __init__(self, sampler, first_position: Callable[[], int]):
        self.sampler = sampler
        self.first_position = first_position

    def __iter__(self) -> Iterator[PositionedIndex]:
        first = self.first_position()
        return (PositionedIndex(index, first + i) for i, index in enumerate(self.sampler))

    def __len__(self) -> int:
        return len(self.sampler)

    def __getattr__(self, name):
        return getattr(self.__dict__['sampler'], name)


class SeededBatches:
    """``dataset.__getitems__`` that loads each batch under generators seeded by the batch."""

    def __init__(self, dataset, seed: int, rank: int):
        self.dataset = dataset
        self.seed = seed % 2**32
        self.rank = rank
        self.own_getitems = getattr(dataset, '__getitems__', None)

    def __call__(self, indices: List[int]) -> list:
        positions = [index.position for index in indices if isinstance(index, PositionedIndex)]
        plain = [int(index) for index in indices]
        if not positions:
            return self._load(plain)
        seed = int(np.random.SeedSequence([self.seed, self.rank, min(positions)]).generate_state(1)[0])
        with _forked_cpu_generators(seed):
            return self._load(plain)

    def _load(self, indices: List[int]) -> list:
        if self.own_getitems is not None:
            return self.own_getitems(indices)
        return [self.dataset[index] for index in indices]


def seed_batches(loader: DataLoader, seed: int, rank: int, first_position: Callable[[], int]) -> bool:
    """Make every batch of ``loader`` draw from generators seeded by (seed, rank, its position).

    ``first_position()`` is the stream position of the first sample of an iteration over the loader
    (read when it starts). Also gives the loader its own generator, so starting an iteration (which
    draws a seed for the workers) leaves the global generators alone. Returns False, changing
    nothing, for a loader without a batch sampler that holds a sampler or with a dataset that takes
    no attributes.
    """
    batch_sampler = loader.batch_sampler
    sampler: Optional[object] = getattr(batch_sampler, 'sampler', None)
    if sampler is None or isinstance(sampler, PositionedSampler):
        return False
    try:
        loader.dataset.__getitems__ = SeededBatches(loader.dataset, seed, rank)
    except AttributeError:  # a dataset that takes no attributes (a list, __slots__)
        return False
    batch_sampler.sampler = PositionedSampler(sampler, first_position)
    loader.generator = torch.Generator().manual_seed(seed)
    return True


def sampler_of(loader: DataLoader):
    """The sampler that orders ``loader``'s samples (inside its batch sampler, if any)."""
    sampler = getattr(loader.batch_sampler, 'sampler', None) or loader.sampler
    return sampler.sampler if isinstance(sampler, PositionedSampler) else sampler
