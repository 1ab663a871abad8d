"""The backbone contract table: one row per backbone (PiT once per dense output type).

tests/test_models/test_backbone_contract.py runs every contract test on every row;
tests/test_dense.py builds its tiny dense models from the rows' arches. Adding a family means
adding its row here. Channels, strides and map sizes are written out from the papers' designs,
independently of the code under test.
"""
from dataclasses import dataclass, field
from typing import Callable, List, Tuple

from vitzoo.models import LVT, PCPVT, SVT, DaViT, PiT

Sizes = Callable[[int, int], List[Tuple[int, int]]]


def floor_grids(strides) -> Sizes:
    """Maps of ``floor(H / s) x floor(W / s)``: non-overlapping patch embeddings drop remainder pixels."""
    return lambda h, w: [(h // s, w // s) for s in strides]


def ceil_grids(strides) -> Sizes:
    """Maps of ``ceil(H / s) x ceil(W / s)``: padded patch embeddings keep every pixel."""
    return lambda h, w: [(-(-h // s), -(-w // s)) for s in strides]


def pit_grids(patch: int, stride: int, num_stages: int = 3) -> Sizes:
    """PiT: an unpadded ``patch``/``stride`` conv, then stride-2 poolings (3x3, padding 1)."""

    def sizes(h, w):
        out = [((h - patch) // stride + 1, (w - patch) // stride + 1)]
        for _ in range(num_stages - 1):
            out.append(tuple(-(-n // 2) for n in out[-1]))
        return out

    return sizes


@dataclass(frozen=True)
class Row:
    id: str
    backbone: type
    arch: dict  # a tiny arch, so that every contract test runs in well under a second
    channels: Tuple[int, ...]  # of every output (out_indices=None)
    strides: Tuple[int, ...]  # nominal
    sizes: Sizes  # exact (h, w) of every output for an H x W input
    kwargs: dict = field(default_factory=dict)  # other constructor arguments of the row


TWINS_TINY = dict(embed_dims=[16, 32, 48, 64], num_heads=[1, 2, 2, 4], mlp_ratios=[2, 2, 2, 2],
                  sr_ratios=[4, 2, 1, 1])
PIT_TINY = dict(base_dims=[8, 8, 8], depths=[1, 2, 1], num_heads=[1, 2, 4], patch_size=16, stride=8)

ROWS = [
    Row('pcpvt', PCPVT, dict(TWINS_TINY, depths=[2, 1, 1, 1]), (16, 32, 48, 64), (4, 8, 16, 32),
        floor_grids((4, 8, 16, 32))),
    Row('svt', SVT, dict(TWINS_TINY, depths=[2, 2, 2, 2], window_sizes=[7, 7, 7, 7]), (16, 32, 48, 64),
        (4, 8, 16, 32), floor_grids((4, 8, 16, 32))),
    Row('davit', DaViT, dict(embed_dims=[16, 32, 48, 64], depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4]),
        (16, 32, 48, 64), (4, 8, 16, 32), ceil_grids((4, 8, 16, 32))),
    Row('pit-featmap', PiT, PIT_TINY, (8, 16, 32), (8, 16, 32), pit_grids(16, 8), dict(out_type='featmap')),
    Row('pit-pyramid', PiT, PIT_TINY, (8, 8, 16, 32), (4, 8, 16, 32), ceil_grids((4, 8, 16, 32)),
        dict(out_type='pyramid')),
    Row('lvt', LVT, dict(embed_dims=[16, 16, 32, 64], depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 4],
                         mlp_ratios=[2, 2, 2, 2], sr_ratios=[8, 4, 2, 1], attn_types=['csa', 'rasa', 'rasa', 'rasa'],
                         conv_mlps=[False, True, True, True]),
        (16, 16, 32, 64), (4, 8, 16, 32), ceil_grids((4, 8, 16, 32))),
]

# Every backbone class of the table, once.
BACKBONES = list(dict.fromkeys(row.backbone for row in ROWS))


def row_of(backbone: type, **kwargs) -> Row:
    """The table's row of ``backbone`` whose arguments agree with ``kwargs`` (first one otherwise)."""
    rows = [row for row in ROWS if row.backbone is backbone]
    matching = [row for row in rows if all(kwargs.get(k, v) == v for k, v in row.kwargs.items())]
    return (matching or rows)[0]
