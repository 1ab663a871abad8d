"""Write the model tables of README.md from the model index.

    python tools/misc/model_tables.py            # rewrite the tables in README.md
    python tools/misc/model_tables.py --check    # exit 1 if README.md is not up to date

The tables go between the ``<!-- model-table:start -->`` and ``<!-- model-table:end -->``
markers: one table per task, classification split by collection, with the index's parameters,
FLOPs (each family's paper convention for attention matmuls), published metrics, config and
weights links. The note under each table's FLOPs comes from the backbone classes of its configs
(``VitBackbone.paper``, ``paper_flops_count_attention``, ``flops_note``).
"""
import argparse
import functools
import os.path as osp
import sys
from collections import OrderedDict

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, REPO)

from vitzoo.apis.model import load_model_index  # noqa: E402

START, END = '<!-- model-table:start -->', '<!-- model-table:end -->'
TASK_ORDER = ['Image Classification', 'Semantic Segmentation', 'Panoptic Segmentation']
METRIC_ORDER = ['Top 1 Accuracy', 'Top 5 Accuracy', 'mIoU', 'PQ', 'PQ_th', 'PQ_st']
METRIC_HEADERS = {'Top 1 Accuracy': 'Top-1 (%)', 'Top 5 Accuracy': 'Top-5 (%)', 'mIoU': 'mIoU',
                  'PQ': 'PQ', 'PQ_th': 'PQ<sup>th</sup>', 'PQ_st': 'PQ<sup>st</sup>'}
# What the FLOPs of the dense collections count (the backbone classes add their convention).
DENSE_FLOPS_SCOPE = {
    'SegFormer': 'of the whole model',
    'Panoptic FPN': 'of the whole model with 1000 fixed proposals in the RoI head (mmdet\'s dummy forward; '
                    '800x1344 is a 1333x800 image padded to 32)',
}


def _number(value, scale: float) -> str:
    if value is None:
        return '-'
    x = value / scale
    return f'{x:.3f}' if x < 0.1 else f'{x:.2f}'


def _weights(info) -> str:
    if info.weights:
        return f'[model]({info.weights})'
    page = (info.converted_from or {}).get('Weights')
    if page:
        file = (info.converted_from or {}).get('File')
        return f'[official]({page})' + (f' (`{file}`)' if file else '')
    return '-'


@functools.lru_cache(maxsize=None)
def _config(path: str):
    from mmengine.config import Config
    return Config.fromfile(path)


def _input_size(info) -> str:
    from vitzoo.apis.complexity import measured_input_shape
    h, w = measured_input_shape(_config(info.config))
    return f'{h}x{w}'


def _backbone_class(info) -> type:
    from vitzoo.models.backbones import VitBackbone
    from vitzoo.registry import MODELS
    kind = _config(info.config).model.backbone.type
    cls = MODELS.get(kind)
    if not (isinstance(cls, type) and issubclass(cls, VitBackbone)):
        raise SystemExit(f'{info.name}: backbone {kind!r} is not a vitzoo backbone; its FLOPs convention is unknown')
    return cls


def flops_note(collection: str, backbones) -> str:
    """The FLOPs note of a collection whose configs use the ``backbones`` classes.

    A family's own collection takes the family's note; another classification collection (the
    demo) names the convention it follows; a dense collection states its scope and, per family,
    whether attention matmuls count.
    """
    families = {cls.paper: cls for cls in backbones}
    if collection in DENSE_FLOPS_SCOPE:
        excluded = sorted(p for p, cls in families.items() if not cls.paper_flops_count_attention)
        if not excluded:
            rule = 'included for every family'
        elif len(excluded) == len(families):
            rule = f'excluded for {", ".join(excluded)}'
        else:
            rule = f'excluded for {", ".join(excluded)}, included otherwise'
        return (f'{DENSE_FLOPS_SCOPE[collection]}; attention matmuls counted as the backbone family\'s paper does '
                f'({rule})')
    if len(families) != 1:
        raise SystemExit(f'collection {collection} mixes the backbone families {sorted(families)}: '
                         f'give it a FLOPs scope in DENSE_FLOPS_SCOPE')
    (paper, cls), = families.items()
    if collection == paper:
        return cls.flops_note
    return f'{"with" if cls.paper_flops_count_attention else "without"} the attention matmuls ({paper} convention)'


def render(models) -> str:
    by_task = OrderedDict((task, []) for task in TASK_ORDER)
    for info in models:
        by_task.setdefault(info.task or 'Other', []).append(info)
    out = []
    for task, infos in by_task.items():
        if not infos:
            continue
        groups = OrderedDict()
        for info in infos:
            groups.setdefault(info.collection or '-', []).append(info)
        for collection, group in groups.items():
            datasets = sorted({r.get('Dataset', '-') for i in group for r in i.results})
            sizes = {i.name: _input_size(i) for i in group}
            per_row = len(set(sizes.values())) > 1
            where = '' if per_row else f'; FLOPs at {next(iter(sizes.values()))}'
            out.append(f'### {task}: {collection} ({", ".join(datasets)}{where})')
            out.append('')
            metrics = [m for m in METRIC_ORDER
                       if any(m in (r.get('Metrics') or {}) for i in group for r in i.results)]
            header = ['Model'] + (['Input'] if per_row else []) + ['Params (M)', 'FLOPs (G)'] + \
                [METRIC_HEADERS[m] for m in metrics] + ['Config', 'Weights']
            out.append('| ' + ' | '.join(header) + ' |')
            out.append('|' + '|'.join([':---'] + ['---:'] * (len(header) - 3) + [':---:'] * 2) + '|')
            for info in group:
                values = (info.results[0].get('Metrics') or {}) if info.results else {}
                rel = osp.relpath(osp.realpath(info.config), REPO)
                row = [f'`{info.name}`'] + ([sizes[info.name]] if per_row else []) + \
                    [_number(info.params, 1e6), _number(info.flops, 1e9)]
                row += [f'{values[m]}' if m in values else '-' for m in metrics]
                row += [f'[config]({rel})', _weights(info)]
                out.append('| ' + ' | '.join(row) + ' |')
            out.append('')
            out.append(f'FLOPs {flops_note(collection, [_backbone_class(i) for i in group])}.')
            out.append('')
    return '\n'.join(out).rstrip() + '\n'


def updated_readme(readme: str, tables: str) -> str:
    if START not in readme or END not in readme:
        raise SystemExit(f'README.md needs the markers {START} and {END}')
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f'{head}{START}\n<!-- generated by tools/misc/model_tables.py from model-index.yml: do not edit -->\n\n' \
           f'{tables}\n{END}{tail}'


def main(argv=None):
    parser = argparse.ArgumentParser(description='Write the README model tables from the model index')
    parser.add_argument('--check', action='store_true', help='only check that README.md is up to date')
    parser.add_argument('--readme', default=osp.join(REPO, 'README.md'))
    parser.add_argument('--index', default=osp.join(REPO, 'model-index.yml'))
    args = parser.parse_args(argv)
    models = list(load_model_index(args.index).values())
    with open(args.readme, encoding='utf-8') as f:
        readme = f.read()
    new = updated_readme(readme, render(models))
    if args.check:
        if new != readme:
            print(f'{args.readme} is out of date with {args.index}: run python tools/misc/model_tables.py')
            sys.exit(1)
        print(f'{args.readme} is up to date')
        return
    if new != readme:
        with open(args.readme, 'w', encoding='utf-8') as f:
            f.write(new)
        print(f'updated the model tables in {args.readme}')
    else:
        print(f'{args.readme} is already up to date')


if __name__ == '__main__':
    main()
