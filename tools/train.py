"""Train a model from a config of any task (mmpretrain, mmseg or mmdet, by its default_scope).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [PATH]] [--partial] [--amp] [--auto-scale-lr]
                                 [--cfg-options k=v ...] [--launcher {none,pytorch,slurm,mpi}]

Checkpoints load strictly: ``load_from`` and ``--resume`` stop the run before training when the
checkpoint does not fit the model; ``--partial`` loads only the tensors of ``load_from`` that fit
(fine-tuning from another head, say) and logs what was left at its initial values.
"""
import argparse
import glob
import os
import os.path as osp

from mmengine.config import Config, DictAction

from vitzoo.engine import build_runner, latest_checkpoint, shutdown_distributed


def parse_args():
    parser = argparse.ArgumentParser(description='Train a vitzoo model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='directory for logs and checkpoints '
                        '(default: ./work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from PATH, or without PATH from the latest checkpoint in the work dir')
    parser.add_argument('--partial', action='store_true',
                        help='load only the tensors of load_from that fit the model (the log counts the rest)')
    parser.add_argument('--overwrite', action='store_true',
                        help='start over in a work dir that already holds checkpoints of an earlier run')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision training')
    parser.add_argument('--compile', action='store_true', help='torch.compile the training step (cfg.compile)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr linearly with the total batch size (needs auto_scale_lr in the config)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. train_dataloader.batch_size=32')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    if args.partial and args.resume is not None:
        parser.error('--partial applies to load_from; a resumed run (--resume) must match its checkpoint')
    return args


def existing_checkpoints(work_dir: str) -> list:
    return sorted(glob.glob(osp.join(work_dir, '*.pth')))


def merge_args(cfg: Config, args) -> Config:
    cfg.launcher = args.launcher
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        './work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if getattr(args, 'compile', False):
        cfg.compile = True  # MMEngine compiles the model's train_step (tools/test.py --compile: its test_step)
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise ValueError(f'--auto-scale-lr needs auto_scale_lr=dict(base_batch_size=...) in {args.config}')
        cfg.auto_scale_lr.enable = True
    if args.partial:
        cfg.load_partial = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, latest_checkpoint(cfg.work_dir)
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def main():
    args = parse_args()
    cfg = merge_args(Config.fromfile(args.config), args)
    checkpoints = existing_checkpoints(cfg.work_dir)
    if checkpoints and not cfg.get('resume', False) and not args.overwrite:
        raise SystemExit(f'{cfg.work_dir} already holds checkpoints of an earlier run '
                         f'({", ".join(osp.basename(c) for c in checkpoints[:3])}); pass --resume to continue '
                         'it, --work-dir to train elsewhere, or --overwrite to start over')
    runner = build_runner(cfg, args.launcher)
    runner.train()
    shutdown_distributed()


if __name__ == '__main__':
    main()
