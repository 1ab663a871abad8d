"""Loss and metric curves of MMEngine training runs, drawn to an image.

    python tools/analysis_tools/analyze_logs.py plot_curve LOG [LOG ...] [--keys loss accuracy/top1]
        [--xaxis {iter,epoch}] [--legend NAME ...] [--title T] --out curves.png
    python tools/analysis_tools/analyze_logs.py cal_train_time LOG [LOG ...]

LOG is MMEngine's scalar log of a run, ``WORK_DIR/<timestamp>/vis_data/scalars.json`` (one JSON
object per line), or a work dir / timestamp dir holding one (the latest run is taken). Training
records carry ``iter`` and ``epoch``; validation records carry only ``step`` (the epoch of an
epoch-based run, the iteration of an iteration-based one).

``--xaxis iter`` (default) draws training scalars at their iteration and validation metrics at
the last logged training iteration before them; ``--xaxis epoch`` draws the mean of each training
scalar over each epoch and validation metrics at their epoch. Each key gets its own panel; the
curves of several logs share them. Without ``--keys``: ``loss`` and every validation metric.
"""
import argparse
import glob
import json
import os.path as osp
from collections import defaultdict

import matplotlib

matplotlib.use('Agg')

import matplotlib.pyplot as plt  # noqa: E402

TRAIN_META = {'iter', 'epoch', 'step', 'time', 'data_time', 'memory', 'base_lr', 'lr'}


def find_log(path: str) -> str:
    """The scalars.json behind a path: the file itself, or the latest under a work dir."""
    if osp.isfile(path):
        return path
    candidates = sorted(glob.glob(osp.join(path, 'vis_data', 'scalars.json')) +
                        glob.glob(osp.join(path, '*', 'vis_data', 'scalars.json')))
    if not candidates:
        raise FileNotFoundError(f'no vis_data/scalars.json under {path!r}')
    return candidates[-1]


def load_log(path: str):
    """``(train records, val records)`` of a scalars.json; val records get ``iter`` and ``epoch`` too."""
    train, val = [], []
    last_iter = 0
    with open(find_log(path)) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            record = json.loads(line)
            if 'iter' in record:
                last_iter = record['iter']
                train.append(record)
            else:
                by_epoch = bool(train) and 'epoch' in train[-1]
                record = dict(record, iter=last_iter, epoch=record.get('step') if by_epoch else None)
                val.append(record)
    return train, val


def series(train, val, key: str, xaxis: str):
    """``(xs, ys)`` of one key."""
    if any(key in r for r in train):
        records = [r for r in train if key in r]
        if xaxis == 'iter':
            return [r['iter'] for r in records], [r[key] for r in records]
        if any('epoch' not in r for r in records):
            raise SystemExit(f'--xaxis epoch: the log of {key!r} has no epochs (an iteration-based run)')
        per_epoch = defaultdict(list)
        for r in records:
            per_epoch[r['epoch']].append(r[key])
        epochs = sorted(per_epoch)
        return epochs, [sum(per_epoch[e]) / len(per_epoch[e]) for e in epochs]
    records = [r for r in val if key in r]
    if xaxis == 'epoch':
        if any(r['epoch'] is None for r in records):
            raise SystemExit(f'--xaxis epoch: the log of {key!r} has no epochs (an iteration-based run)')
        return [r['epoch'] for r in records], [r[key] for r in records]
    return [r['iter'] for r in records], [r[key] for r in records]


def default_keys(logs) -> list:
    keys = ['loss'] if any('loss' in r for train, _ in logs for r in train) else []
    for _, val in logs:
        for r in val:
            keys += [k for k in r if k not in TRAIN_META and k not in keys and isinstance(r[k], (int, float))]
    return keys


def plot_curve(args) -> None:
    logs = [load_log(path) for path in args.logs]
    keys = args.keys or default_keys(logs)
    if not keys:
        raise SystemExit('nothing to draw: give --keys')
    legends = args.legend or [osp.basename(osp.dirname(osp.dirname(osp.abspath(find_log(p))))) for p in args.logs]
    if len(legends) != len(logs):
        raise SystemExit(f'--legend needs one name per log ({len(logs)})')
    fig, axes = plt.subplots(len(keys), 1, figsize=(8, 3.2 * len(keys)), squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        drawn = False
        for (train, val), legend in zip(logs, legends):
            xs, ys = series(train, val, key, args.xaxis)
            if xs:
                ax.plot(xs, ys, marker='o' if len(xs) < 30 else None, label=legend)
                drawn = True
        if not drawn:
            raise SystemExit(f'no log holds the key {key!r}')
        ax.set_ylabel(key)
        ax.set_xlabel(args.xaxis)
        ax.grid(alpha=0.3)
        ax.legend()
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f'{", ".join(keys)} vs {args.xaxis} drawn to {args.out}')


def cal_train_time(args) -> None:
    for path in args.logs:
        train, _ = load_log(path)
        times = [r['time'] for r in train if 'time' in r]
        if not times:
            print(f'{path}: no iteration times')
            continue
        ordered = sorted(times)
        print(f'{find_log(path)}: {len(times)} logged iterations, mean {sum(times) / len(times):.4f} s/iter, '
              f'median {ordered[len(ordered) // 2]:.4f}, slowest {ordered[-1]:.4f}, fastest {ordered[0]:.4f}')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Analyse MMEngine scalar logs')
    sub = parser.add_subparsers(dest='task', required=True)
    plot = sub.add_parser('plot_curve', help='draw scalars against iteration or epoch')
    plot.add_argument('logs', nargs='+', help='scalars.json files or work dirs')
    plot.add_argument('--keys', nargs='+', help='scalars to draw (default: loss and the validation metrics)')
    plot.add_argument('--xaxis', choices=['iter', 'epoch'], default='iter')
    plot.add_argument('--legend', nargs='+', help='one name per log')
    plot.add_argument('--title')
    plot.add_argument('--out', required=True, help='image file to write (png, pdf, svg, ...)')
    timing = sub.add_parser('cal_train_time', help='iteration time statistics')
    timing.add_argument('logs', nargs='+', help='scalars.json files or work dirs')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.task == 'plot_curve':
        plot_curve(args)
    else:
        cal_train_time(args)


if __name__ == '__main__':
    main()
