"""Evaluate a checkpoint with a config of any task (mmpretrain, mmseg or mmdet, by its default_scope).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE.pkl] [--show-dir DIR] [--tta]
                                           [--cfg-options k=v ...] [--launcher {none,pytorch,slurm,mpi}]

CHECKPOINT is a local path or an http(s) URL (downloaded once into ~/.cache/vitzoo/checkpoints,
resumable, checked against the hash in its file name). Official, timm and mmpretrain checkpoints
of the vitzoo classifiers load directly: they are converted as they load.
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config, ConfigDict, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from vitzoo.engine import prepare_runtime
from vitzoo.utils import resolve_checkpoint


def parse_args():
    parser = argparse.ArgumentParser(description='Evaluate a vitzoo model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file path or http(s) URL')
    parser.add_argument('--work-dir', help='directory for the evaluation metrics and logs')
    parser.add_argument('--out', help='dump the predictions to this pickle file (.pkl)')
    parser.add_argument('--show-dir', help='save visualised predictions into this directory')
    parser.add_argument('--tta', action='store_true', help='test-time augmentation')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. test_dataloader.batch_size=32')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        parser.error(f'--out must name a .pkl or .pickle file, got {args.out!r}')
    return args


def enable_visualization(cfg: Config, show_dir: str, scope: str) -> None:
    hook = cfg.default_hooks.setdefault('visualization', ConfigDict(type='VisualizationHook'))
    if scope == 'mmpretrain':
        hook.update(enable=True, out_dir=show_dir)
    elif scope == 'mmdet':
        hook.update(draw=True, test_out_dir=show_dir)
    elif scope == 'mmseg':
        hook.update(draw=True)
        cfg.visualizer.save_dir = show_dir
    else:
        raise ValueError(f'--show-dir is not supported for default_scope={scope!r}')


def enable_tta(cfg: Config, scope: str) -> None:
    """Wrap the model in the toolbox's TTA model; classification gets flip TTA by default."""
    if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
        if scope != 'mmpretrain':
            raise ValueError(f'--tta needs tta_model and tta_pipeline in {cfg.filename}')
        pipeline = cfg.test_dataloader.dataset.pipeline
        cfg.tta_model = dict(type='AverageClsScoreTTA')
        cfg.tta_pipeline = pipeline[:-1] + [
            dict(type='TestTimeAug', transforms=[
                [dict(type='RandomFlip', prob=0.), dict(type='RandomFlip', prob=1.)],
                [pipeline[-1]],
            ])
        ]
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def merge_args(cfg: Config, args) -> Config:
    scope = cfg.get('default_scope', 'mmengine')
    cfg.launcher = args.launcher
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        './work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = resolve_checkpoint(args.checkpoint)
    if args.show_dir:
        enable_visualization(cfg, args.show_dir, scope)
    if args.tta:
        enable_tta(cfg, scope)
    if args.out:
        dump = dict(type='DumpDetResults' if scope == 'mmdet' else 'DumpResults', out_file_path=args.out)
        evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]
        cfg.test_evaluator = list(evaluators) + [dump]
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def main():
    args = parse_args()
    cfg = merge_args(Config.fromfile(args.config), args)
    cfg = prepare_runtime(cfg, args.launcher)
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    metrics = runner.test()
    if int(os.environ.get('RANK', 0)) == 0:
        for name, value in metrics.items():
            print(f'{name}: {value}')


if __name__ == '__main__':
    main()
