"""Evaluate a checkpoint with a config of any task (mmpretrain, mmseg or mmdet, by its default_scope).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE.pkl] [--show-dir DIR] [--tta] [--partial]
                                           [--cfg-options k=v ...] [--launcher {none,pytorch,slurm,mpi}]
    python tools/test.py MODEL_NAME [CHECKPOINT] [...]

CHECKPOINT is a local path or an http(s) URL (downloaded once into ~/.cache/vitzoo/checkpoints,
resumable, checked against the hash in its file name). Official, timm and mmpretrain checkpoints
of the vitzoo classifiers load directly: they are converted as they load. The checkpoint must fit
the model exactly (every tensor present with its shape, none left over), or the run stops before
evaluating, naming the differences; ``--partial`` loads only what fits and logs what was left out.

A model name of the index (``python -c "import vitzoo; print(vitzoo.list_models())"``) stands for
its config; without CHECKPOINT its released weights are used.
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config, ConfigDict, DictAction

from vitzoo.engine import build_runner, shutdown_distributed
from vitzoo.utils import resolve_checkpoint


def parse_args():
    parser = argparse.ArgumentParser(description='Evaluate a vitzoo model')
    parser.add_argument('config', help='test config file path, or a model name of the index')
    parser.add_argument('checkpoint', nargs='?',
                        help='checkpoint file path or http(s) URL (default for a model name: its released weights)')
    parser.add_argument('--work-dir', help='directory for the evaluation metrics and logs')
    parser.add_argument('--out', help='dump the predictions to this pickle file (.pkl)')
    parser.add_argument('--show-dir', help='save visualised predictions into this directory')
    parser.add_argument('--tta', action='store_true', help='test-time augmentation')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile the model\'s test step (MMEngine\'s cfg.compile; first batches slow)')
    parser.add_argument('--partial', action='store_true',
                        help='load only the checkpoint tensors that fit the model (the log counts the rest) '
                        'instead of stopping on the first difference')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. test_dataloader.batch_size=32')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        parser.error(f'--out must name a .pkl or .pickle file, got {args.out!r}')
    try:
        resolve_model_name(args)
    except ValueError as err:
        parser.error(str(err))
    return args


def resolve_model_name(args) -> None:
    """Turn a model name given in place of a config into its config and (default) weights."""
    args.model_name = None
    if args.config.endswith('.py') or osp.isfile(args.config):
        if args.checkpoint is None:
            raise ValueError('a config needs a CHECKPOINT (a path or an http(s) URL)')
        return
    from vitzoo.apis.model import ModelHub, no_weights_message
    info = ModelHub.get(args.config)
    args.model_name, args.config = info.name, info.config
    if args.checkpoint is None:
        if not info.weights:
            raise ValueError(no_weights_message(info, how='test.py'))
        args.checkpoint = info.weights


def enable_visualization(cfg: Config, show_dir: str, scope: str) -> None:
    hook = cfg.default_hooks.setdefault('visualization', ConfigDict(type='VisualizationHook'))
    hook.interval = 1  # every test image
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
    # MMEngine gives a TTA wrapper the config's top-level data_preprocessor, and the wrapper then replaces
    # the wrapped model's own with it: a model with its own normalisation would be tested without it.
    # The wrapper gets what the model uses in a plain run (its own, else the top-level one).
    preprocessor = cfg.model.get('data_preprocessor') or cfg.get('data_preprocessor')
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    if preprocessor is not None:
        cfg.model.data_preprocessor = preprocessor
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def merge_args(cfg: Config, args) -> Config:
    scope = cfg.get('default_scope', 'mmengine')
    cfg.launcher = args.launcher
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        './work_dirs', getattr(args, 'model_name', None) or osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = resolve_checkpoint(args.checkpoint)
    cfg.load_partial = args.partial
    if args.show_dir and args.tta and scope == 'mmpretrain':
        raise ValueError('--show-dir cannot be combined with --tta for classification: mmpretrain\'s '
                         'visualisation hook draws one image per sample, TTA feeds several')
    if args.show_dir:
        enable_visualization(cfg, args.show_dir, scope)
    if args.tta:
        enable_tta(cfg, scope)
    if args.out:
        dump = dict(type='DumpDetResults' if scope == 'mmdet' else 'DumpResults', out_file_path=args.out)
        evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]
        cfg.test_evaluator = list(evaluators) + [dump]
    if args.compile:
        cfg.compile = True
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def main():
    args = parse_args()
    cfg = merge_args(Config.fromfile(args.config), args)
    runner = build_runner(cfg, args.launcher)
    if cfg.get('compile'):
        # MMEngine's test loop does not compile; its own helper applies cfg.compile to test_step
        runner._maybe_compile('test_step')
    metrics = runner.test()
    shutdown_distributed()
    if int(os.environ.get('RANK', 0)) == 0:
        for name, value in metrics.items():
            print(f'{name}: {value}')


if __name__ == '__main__':
    main()
