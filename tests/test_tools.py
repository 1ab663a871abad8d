"""tools/train.py, tools/test.py, the dist scripts and the converters (downloads: test_reliability.py)."""
import hashlib
import os
import os.path as osp
import re
import shutil

import pytest
import torch
from mmengine.config import Config

from helpers import digits_test_options, free_port, load_tool, run_tool, run_tool_in_process, tiny_cls_config

DEMO = 'configs/demo/twins-pcpvt-tiny_1xb64_digits.py'


def top1(output: str) -> float:
    return float(re.findall(r'accuracy/top1: ([\d.]+)', output)[-1])


@pytest.fixture(scope='module')
def trained(digits_root, tmp_path_factory):
    """One epoch of the demo model through tools/train.py, then --resume for a second epoch."""
    tmp = tmp_path_factory.mktemp('train')
    config = tiny_cls_config(DEMO, str(tmp), digits_root, num_images=32)
    work_dir = str(tmp / 'work')
    run_tool('tools/train.py', config, '--work-dir', work_dir)
    assert osp.exists(osp.join(work_dir, 'epoch_1.pth'))
    resumed = run_tool('tools/train.py', config, '--work-dir', work_dir, '--resume',
                       '--cfg-options', 'train_cfg.max_epochs=2')
    return config, work_dir, resumed.stdout + resumed.stderr


def test_resume_continues_from_the_checkpoint(trained):
    _, work_dir, log = trained
    assert 'resumed epoch: 1' in log.lower() or 'Resumed' in log
    assert osp.exists(osp.join(work_dir, 'epoch_2.pth'))
    state = torch.load(osp.join(work_dir, 'epoch_2.pth'), map_location='cpu', weights_only=False)
    assert state['meta']['epoch'] == 2


def test_train_refuses_to_overwrite_checkpoints(trained):
    config, work_dir, _ = trained
    proc = run_tool('tools/train.py', config, '--work-dir', work_dir, check=False)
    assert proc.returncode != 0
    assert 'already holds checkpoints' in proc.stderr + proc.stdout
    assert osp.exists(osp.join(work_dir, 'epoch_2.pth'))


def test_test_evaluates_the_checkpoint_from_path_and_url(trained_demo, digits_root, served, tmp_path):
    """The trained demo checkpoint scores far above chance (random weights: about 10 %), from a path
    and from a URL alike, and the dumped predictions are the model's outputs with those weights."""
    import mmengine

    import vitzoo
    _, checkpoint = trained_demo
    data = digits_test_options(digits_root)
    local = run_tool('tools/test.py', DEMO, checkpoint, '--work-dir', str(tmp_path / 'a'), '--out',
                     str(tmp_path / 'preds.pkl'), '--cfg-options', *data)
    assert re.search(rf'loaded (\d+) of \1 tensors from {re.escape(checkpoint)} \(vitzoo layout\)', local.stdout)
    assert top1(local.stdout) > 70
    root, base_url = served
    sha = hashlib.sha256(open(checkpoint, 'rb').read()).hexdigest()
    shutil.copy(checkpoint, root / f'demo-{sha[:8]}.pth')
    cache = tmp_path / 'cache'
    remote = run_tool('tools/test.py', DEMO, f'{base_url}/demo-{sha[:8]}.pth', '--work-dir', str(tmp_path / 'b'),
                      '--cfg-options', *data, env=dict(VITZOO_CACHE=str(cache)))
    assert top1(local.stdout) == top1(remote.stdout)
    assert osp.exists(cache / f'demo-{sha[:8]}.pth')
    preds = mmengine.load(str(tmp_path / 'preds.pkl'))
    assert len(preds) == 359
    model = vitzoo.get_model(DEMO, pretrained=checkpoint)
    for pred in preds[::60]:
        expected = vitzoo.inference_model(model, pred['img_path'])['pred_scores']
        torch.testing.assert_close(pred['pred_score'], torch.from_numpy(expected), rtol=0, atol=1e-5)


def test_test_rejects_bad_out_suffix(trained):
    config, work_dir, _ = trained
    proc = run_tool('tools/test.py', config, osp.join(work_dir, 'epoch_2.pth'), '--out', 'x.json', check=False)
    assert proc.returncode != 0 and '.pkl' in proc.stderr


def test_dist_train_and_test_on_two_cpu_processes(digits_root, tmp_path, monkeypatch, capsys):
    config = tiny_cls_config(DEMO, str(tmp_path), digits_root, num_images=16)
    work_dir = str(tmp_path / 'work')
    train = run_tool('tools/dist_train.sh', config, '2', '--work-dir', work_dir, env=dict(PORT=free_port()))
    log = train.stdout + train.stderr
    assert 'Distributed training: True' in log
    assert osp.exists(osp.join(work_dir, 'epoch_1.pth'))
    checkpoint = osp.join(work_dir, 'epoch_1.pth')
    test = run_tool('tools/dist_test.sh', config, checkpoint, '2', '--work-dir', str(tmp_path / 'eval'),
                    env=dict(PORT=free_port()))
    assert f'tensors from {checkpoint} (vitzoo layout)' in test.stdout  # strictly (rank 0 logs it)
    run_tool_in_process(monkeypatch, 'test', config, checkpoint, '--work-dir', tmp_path / 'single')
    assert top1(test.stdout) == top1(capsys.readouterr().out)  # as one process evaluates it
    assert 'terminate called' not in train.stderr + test.stderr


def test_shutdown_distributed_destroys_the_process_group():
    import torch.distributed as dist

    from vitzoo.engine import shutdown_distributed
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{free_port()}', rank=0, world_size=1)
    assert dist.is_initialized()
    shutdown_distributed()
    assert not dist.is_initialized()
    shutdown_distributed()


@pytest.mark.parametrize('scope', ['mmpretrain', 'mmseg', 'mmdet'])
def test_vitzoo_types_resolve_from_every_default_scope(scope):
    from mmengine.registry import MODELS as ROOT_MODELS
    from mmengine.registry import DefaultScope, init_default_scope
    from mmengine.utils import import_modules_from_strings
    import_modules_from_strings(f'{scope}.registry')
    toolbox_models = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    init_default_scope(scope)
    try:
        backbone = toolbox_models.build(dict(type='vitzoo.PCPVT', arch='small', out_indices=(3, )))
        assert type(backbone).__module__ == 'vitzoo.models.backbones.twins'
        assert ROOT_MODELS.get('vitzoo.SVT').__name__ == 'SVT'
    finally:
        DefaultScope._instance_dict.pop(scope, None)


def test_toolbox_registries_keep_their_own_twins():
    from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
    from mmseg.registry import MODELS as MMSEG_MODELS
    assert MMPRETRAIN_MODELS.get('PCPVT').__module__.startswith('mmpretrain')
    assert MMSEG_MODELS.get('SVT').__module__.startswith('mmseg')


def test_twins2vitzoo_converter_tool(tmp_path):
    timm = pytest.importorskip('timm')
    src = tmp_path / 'pcpvt_small.pth'
    torch.save(timm.create_model('twins_pcpvt_small', pretrained=False).state_dict(), src)
    dst = tmp_path / 'out' / 'pcpvt_small_vitzoo.pth'
    proc = run_tool('tools/model_converters/twins2vitzoo.py', str(src), str(dst))
    assert 'twins (foreign layout)' in proc.stdout
    assert 'it fits twins-pcpvt-small_3rdparty_8xb128_in1k exactly' in proc.stdout
    converted = torch.load(dst, map_location='cpu')['state_dict']
    assert 'backbone.stages.0.patch_embed.proj.weight' in converted and 'head.fc.weight' in converted
    again = run_tool('tools/model_converters/twins2vitzoo.py', str(dst), str(tmp_path / 'again.pth'))
    assert 'already converted' in again.stdout
    refused = run_tool('tools/model_converters/twins2vitzoo.py', str(src), str(dst), check=False)
    assert refused.returncode != 0 and 'exists' in refused.stderr


def test_cpu_runtime_replaces_syncbn():
    from vitzoo.engine import prepare_runtime
    cfg = Config(dict(model=dict(type='X', norm_cfg=dict(type='SyncBN'), heads=[dict(norm=dict(type='SyncBN'))])))
    cfg = prepare_runtime(cfg, 'none')
    assert cfg.model.norm_cfg.type == 'BN' and cfg.model.heads[0].norm.type == 'BN'


def test_slurm_scripts_build_the_srun_command(tmp_path):
    fake = tmp_path / 'srun'
    fake.write_text('#!/bin/bash\necho SRUN "$@"\n')
    fake.chmod(0o755)
    path = dict(PATH=f'{tmp_path}{os.pathsep}{os.environ["PATH"]}', GPUS='16')
    train = run_tool('tools/slurm_train.sh', 'gpu', 'job', DEMO, 'work', '--amp', env=path).stdout
    assert '-p gpu --job-name=job --gres=gpu:8 --ntasks=16' in train
    assert f'tools/train.py {DEMO} --work-dir=work --amp --launcher=slurm' in train
    test = run_tool('tools/slurm_test.sh', 'gpu', 'job', DEMO, 'ckpt.pth', '--tta', env=path).stdout
    assert f'tools/test.py {DEMO} ckpt.pth --tta --launcher=slurm' in test


def test_tta_and_show_dir(trained, tmp_path):
    """--tta averages the scores of each image and its horizontal flip: the TTA run's scores are the mean of
    a plain run's and a run on flipped images; --show-dir draws one image per test image."""
    import mmengine
    config, work_dir, _ = trained
    checkpoint, show_dir = osp.join(work_dir, 'epoch_2.pth'), tmp_path / 'vis'
    flipped = tmp_path / 'flipped.py'
    flipped.write_text(f"_base_ = {config!r}\ntest_dataloader = dict(dataset=dict(pipeline=[\n"
                       "    dict(type='LoadImageFromFile'), dict(type='Resize', scale=(32, 32)),\n"
                       "    dict(type='RandomFlip', prob=1., direction='horizontal'), dict(type='PackInputs')]))\n")
    loaded = rf'loaded (\d+) of \1 tensors from {re.escape(checkpoint)} \(vitzoo layout\)'  # TTA: in the wrapper
    scores = {}
    for run, cfg, extra in (('tta', config, ['--tta']), ('plain', config, ['--show-dir', str(show_dir)]),
                            ('flipped', str(flipped), [])):
        out = tmp_path / f'{run}.pkl'
        proc = run_tool('tools/test.py', cfg, checkpoint, *extra, '--out', str(out), '--work-dir', str(tmp_path / run))
        assert re.search(loaded, proc.stdout) and 0.0 <= top1(proc.stdout) <= 100.0
        scores[run] = torch.stack([torch.as_tensor(p['pred_score']) for p in mmengine.load(str(out))])
    assert len(scores['tta']) == 8 and (scores['plain'] - scores['flipped']).abs().max() > 1e-3
    torch.testing.assert_close(scores['tta'], (scores['plain'] + scores['flipped']) / 2, rtol=0, atol=1e-5)
    assert len(list(show_dir.rglob('*.png'))) == 8  # one visualisation per test image
    both = run_tool('tools/test.py', config, checkpoint, '--tta', '--show-dir', str(show_dir), check=False)
    assert both.returncode != 0 and 'cannot be combined' in both.stderr


def test_train_flags_rewrite_the_config(tmp_path):
    from argparse import Namespace

    from helpers import REPO
    train = load_tool('train')
    args = Namespace(config=osp.join(REPO, 'configs/twins/twins-pcpvt-small_8xb128_in1k.py'), work_dir=None,
                     resume='auto', overwrite=False, amp=True, auto_scale_lr=True, partial=False,
                     cfg_options={'train_dataloader.batch_size': 4}, launcher='none')
    cfg = train.merge_args(Config.fromfile(args.config), args)
    assert cfg.work_dir == osp.join('./work_dirs', 'twins-pcpvt-small_8xb128_in1k')
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.auto_scale_lr.enable and cfg.auto_scale_lr.base_batch_size == 1024
    assert cfg.resume is True and cfg.load_from is None and not cfg.get('load_partial', False)
    assert cfg.train_dataloader.batch_size == 4
    args.resume, args.config = 'some/ckpt.pth', osp.join(REPO, DEMO)
    cfg = train.merge_args(Config.fromfile(args.config), Namespace(**{**vars(args), 'auto_scale_lr': False}))
    assert cfg.resume is True and cfg.load_from == 'some/ckpt.pth'
    cfg = train.merge_args(Config.fromfile(args.config), Namespace(**{**vars(args), 'auto_scale_lr': False,
                                                                      'resume': None, 'partial': True}))
    assert cfg.load_partial is True and not cfg.get('resume', False)
    with pytest.raises(ValueError, match='auto_scale_lr'):
        train.merge_args(Config.fromfile(args.config), args)
