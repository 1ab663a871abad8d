"""Confusion matrix of a classifier on its test set, from a checkpoint or from saved predictions.

    python tools/analysis_tools/confusion_matrix.py CONFIG_OR_NAME CHECKPOINT_OR_PKL
        [--show-path cm.png] [--out cm.pkl] [--include-values] [--normalize] [--cmap viridis]
        [--cfg-options k=v ...]

CHECKPOINT_OR_PKL is a checkpoint (path or http(s) URL; the test set is evaluated here) or the
predictions saved by ``tools/test.py CONFIG CKPT --out preds.pkl`` (nothing is run). The matrix
(rows: true class, columns: predicted class) is printed with each class's recall; ``--show-path``
draws it to an image (matplotlib, Agg backend), ``--out`` saves it as a tensor (.pkl).
"""
import argparse
import os.path as osp
import tempfile

import matplotlib

matplotlib.use('Agg')

import mmengine  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.evaluator import Evaluator  # noqa: E402

from vitzoo.engine import build_runner  # noqa: E402
from vitzoo.utils import resolve_checkpoint  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Confusion matrix of a classifier on its test set')
    parser.add_argument('config', help='test config file, or a model name of the index')
    parser.add_argument('ckpt_or_result', help='checkpoint (path or URL), or predictions (.pkl) of tools/test.py --out')
    parser.add_argument('--show-path', help='save the drawn matrix to this image file')
    parser.add_argument('--out', help='save the matrix (a tensor) to this .pkl file')
    parser.add_argument('--include-values', action='store_true', help='write the counts into the cells')
    parser.add_argument('--normalize', action='store_true', help='draw each row as fractions of the true class')
    parser.add_argument('--cmap', default='viridis', help='matplotlib colour map')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    return parser.parse_args(argv)


def load_config(name_or_path: str) -> Config:
    if name_or_path.endswith('.py') or osp.isfile(name_or_path):
        return Config.fromfile(name_or_path)
    from vitzoo.apis.model import ModelHub
    return Config.fromfile(ModelHub.get(name_or_path).config)


def matrix_from_checkpoint(cfg: Config, checkpoint: str):
    cfg.test_evaluator = dict(type='ConfusionMatrix')
    cfg.load_from = resolve_checkpoint(checkpoint)
    with tempfile.TemporaryDirectory() as tmpdir:
        cfg.work_dir = tmpdir
        runner = build_runner(cfg, 'none')
        classes = runner.test_loop.dataloader.dataset.metainfo.get('classes')
        matrix = runner.test()['confusion_matrix/result']
    return matrix, classes


def matrix_from_predictions(cfg: Config, path: str):
    from mmpretrain.evaluation import ConfusionMatrix
    predictions = mmengine.load(path)
    matrix = Evaluator(ConfusionMatrix()).offline_evaluate(predictions, None)['confusion_matrix/result']
    metainfo = (cfg.get('test_dataloader') or {}).get('dataset', {}).get('metainfo') or {}
    classes = metainfo.get('classes')
    if classes is None:
        try:
            from mmengine.registry import DefaultScope
            from mmpretrain.registry import DATASETS
            with DefaultScope.overwrite_default_scope('mmpretrain'):
                classes = DATASETS.build({**cfg.test_dataloader.dataset, 'pipeline': []}).metainfo.get('classes')
        except Exception:  # noqa: BLE001  (no dataset here: number the classes)
            classes = None
    return matrix, classes


def format_matrix(matrix: torch.Tensor, classes) -> str:
    n = matrix.size(0)
    names = [str(c) for c in (classes or range(n))]
    width = max(max(len(x) for x in names), len(str(int(matrix.max()))), 4)
    lines = ['rows: true class, columns: predicted class',
             ' ' * (width + 1) + ' '.join(f'{x:>{width}}' for x in names) + '  recall']
    for i in range(n):
        total = int(matrix[i].sum())
        recall = f'{100 * int(matrix[i, i]) / total:6.1f}%' if total else '     -'
        lines.append(f'{names[i]:>{width}} ' + ' '.join(f'{int(v):>{width}}' for v in matrix[i]) + f'  {recall}')
    correct, total = int(matrix.diag().sum()), int(matrix.sum())
    lines.append(f'accuracy: {100 * correct / max(total, 1):.2f}% ({correct}/{total})')
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    import vitzoo.models  # noqa: F401  (registers vitzoo's types)
    cfg = load_config(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.ckpt_or_result.endswith(('.pkl', '.pickle')):
        matrix, classes = matrix_from_predictions(cfg, args.ckpt_or_result)
    else:
        matrix, classes = matrix_from_checkpoint(cfg, args.ckpt_or_result)
    if classes is not None and len(classes) != matrix.size(0):
        classes = None
    print(format_matrix(matrix, classes))
    if args.out:
        mmengine.dump(matrix, args.out)
        print(f'confusion matrix saved to {args.out}')
    if args.show_path:
        fig = plot(matrix, classes, args.include_values, args.normalize, args.cmap)
        fig.savefig(args.show_path, bbox_inches='tight')
        print(f'confusion matrix drawn to {args.show_path}')


def plot(matrix: torch.Tensor, classes=None, include_values=False, normalize=False, cmap='viridis'):
    """The matrix as a matplotlib figure (rows: true class, columns: predicted class)."""
    import matplotlib.pyplot as plt
    values = matrix.double()
    if normalize:
        values = values / values.sum(1, keepdim=True).clamp(min=1)
    n = values.size(0)
    side = min(max(4., 0.6 * n + 2.), 30.)
    fig, ax = plt.subplots(figsize=(side, side))
    image = ax.imshow(values.numpy(), interpolation='nearest', cmap=cmap)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if n <= 50:
        labels = [str(c) for c in (classes or range(n))]
        ax.set_xticks(range(n), labels, rotation=90 if max(len(x) for x in labels) > 3 else 0)
        ax.set_yticks(range(n), labels)
    ax.set_xlabel('Predicted label')
    ax.set_ylabel('True label')
    ax.set_title('Confusion matrix' + (' (row-normalised)' if normalize else ''))
    if include_values and n <= 50:
        threshold = float(values.max() + values.min()) / 2
        for i in range(n):
            for j in range(n):
                v = float(values[i, j])
                ax.text(j, i, f'{v:.2f}' if normalize else f'{int(v)}', ha='center', va='center',
                        color='black' if v > threshold else 'white', fontsize=8)
    fig.tight_layout()
    return fig


if __name__ == '__main__':
    main()
