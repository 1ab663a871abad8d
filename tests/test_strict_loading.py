"""Strict checkpoint loading wherever a checkpoint meets a model, and clear errors for bad inputs.

Every bad checkpoint (another family, another depth or width, an extra key prefix, empty, truncated,
random bytes, a bare tensor) fails through ``init_cfg`` Pretrained (dict and list form),
``get_model``, ``load_from`` of tools/train.py and tools/test.py, naming the file; partial loading
happens only when asked for and logs what was left out. The tools run in-process here (building a
Runner takes about a second) except one subprocess run per tool checking the exit status.
"""
import glob
import os.path as osp
import pathlib
import time
from collections import OrderedDict

import numpy as np
import pytest
import torch
from mmengine.config import Config

import vitzoo
from vitzoo.models import PCPVT, DaViT
from vitzoo.models.checkpoint import (
    CheckpointMismatchError,
    UnreadableCheckpointError,
    convert_state_dict,
    converter_cli,
    fit_state_dict,
    load_checkpoint_to_model,
    read_checkpoint,
    unwrap_state_dict,
)

from helpers import REPO, assert_parity, free_port, run_tool, run_tool_in_process, tiny_cls_config

DEMO = 'configs/demo/twins-pcpvt-tiny_1xb64_digits.py'
DEMO_NAME = 'twins-pcpvt-tiny_1xb64_digits'
TINY_PCPVT = dict(embed_dims=[16, 32, 48, 64], depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4], mlp_ratios=[2] * 4,
                  sr_ratios=[4, 2, 1, 1])
DEEPER_PCPVT = dict(TINY_PCPVT, depths=[1, 1, 2, 1])
WIDER_PCPVT = dict(TINY_PCPVT, embed_dims=[16, 32, 48, 80])
TINY_DAVIT = dict(embed_dims=[16, 32, 48, 64], depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4])


def save(obj, path) -> str:
    torch.save(obj, path)
    return str(path)


def randomized(module: torch.nn.Module) -> dict:
    """``module``'s state dict with every floating tensor random (norms and biases included)."""
    return OrderedDict((k, torch.randn_like(v) if v.is_floating_point() else v) for k, v in module.state_dict().items())


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """A good tiny-PCPVT classifier checkpoint and the bad ones every entry point must refuse:
    ``{kind: (path, what the error must say)}``."""
    tmp = tmp_path_factory.mktemp('ckpts')
    good = randomized(PCPVT(arch=TINY_PCPVT))
    classifier = OrderedDict((f'backbone.{k}', v) for k, v in good.items())
    classifier.update({'head.fc.weight': torch.randn(10, 64), 'head.fc.bias': torch.randn(10)})
    truncated = tmp / 'truncated.pth'
    torch.save({'state_dict': classifier}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:truncated.stat().st_size // 2])
    (tmp / 'empty.pth').write_bytes(b'')
    (tmp / 'random.pth').write_bytes(np.random.default_rng(0).bytes(4096))
    prefixed = {f'model.{k}': v for k, v in classifier.items()}
    bad = {
        'family': (save({'state_dict': {f'backbone.{k}': v for k, v in DaViT(arch=TINY_DAVIT).state_dict().items()}},
                        tmp / 'davit.pth'), r'(?s)does not fit this backbone.*unexpected.*cpe1'),
        'depth': (save({'state_dict': {f'backbone.{k}': v for k, v in PCPVT(arch=DEEPER_PCPVT).state_dict().items()}},
                       tmp / 'deeper.pth'), r'does not fit.*\n.*unexpected.*stages\.2\.blocks\.1\.'),
        'width': (save({'state_dict': {f'backbone.{k}': v for k, v in PCPVT(arch=WIDER_PCPVT).state_dict().items()}},
                       tmp / 'wider.pth'), r'does not fit.*\n.*mis-shaped: .*checkpoint \[80'),
        'prefix': (save({'state_dict': prefixed}, tmp / 'prefixed.pth'),
                   "fit once the prefix 'model.(backbone.)?' is removed"),
        'empty-state-dict': (save({'state_dict': {}, 'meta': {}}, tmp / 'no_tensors.pth'), 'holds no tensors'),
        'empty-file': (str(tmp / 'empty.pth'), r'is empty \(0 bytes\)'),
        'truncated': (str(truncated), 'cannot read checkpoint.*truncated or not a file written by torch.save'),
        'random-bytes': (str(tmp / 'random.pth'), 'cannot read checkpoint'),
        'bare-tensor': (save(torch.zeros(3, 4), tmp / 'tensor.pth'), r'holds a single tensor of shape \[3, 4\]'),
    }
    return save({'state_dict': classifier}, tmp / 'good.pth'), classifier, bad


BAD = ['family', 'depth', 'width', 'prefix', 'empty-state-dict', 'empty-file', 'truncated', 'random-bytes',
       'bare-tensor']


# ------------------------------------------------------------------------------- reading


def test_read_checkpoint_and_unwrap_name_the_file(checkpoints):
    _, _, bad = checkpoints
    for kind in ('empty-file', 'truncated', 'random-bytes'):
        path, message = bad[kind]
        with pytest.raises(UnreadableCheckpointError, match=message) as err:
            read_checkpoint(path)
        assert f'checkpoint {path} ' in str(err.value)
    for kind in ('empty-state-dict', 'bare-tensor'):
        path, message = bad[kind]
        with pytest.raises(UnreadableCheckpointError, match=message):
            unwrap_state_dict(read_checkpoint(path), path)
    with pytest.raises(FileNotFoundError, match='nowhere.pth.*does not exist'):
        read_checkpoint('/nowhere.pth')
    with pytest.raises(UnreadableCheckpointError, match=r'holds a list, not a state dict'):
        unwrap_state_dict([torch.zeros(1)], 'x.pth')


def test_fit_reports_missing_unexpected_and_misshaped_keys():
    expected = {'a.weight': torch.zeros(2, 3), 'b.weight': torch.zeros(4), 'bn.num_batches_tracked': torch.zeros(()),
                'out_norms.0.weight': torch.zeros(4)}
    given = {'a.weight': torch.zeros(3, 3), 'c.weight': torch.zeros(1), 'norm.weight': torch.zeros(1)}
    fit = fit_state_dict(expected, given, missing_ok=[r'out_norms\.'], unexpected_ok=[r'norm\.'])
    assert fit.mismatched == [('a.weight', [3, 3], [2, 3])] and fit.missing == ['b.weight']
    assert fit.unexpected == ['c.weight'] and fit.excused_unexpected == ['norm.weight']
    assert fit.excused_missing == ['bn.num_batches_tracked', 'out_norms.0.weight'] and not fit.exact
    assert fit.num_left_out == 4 and fit.num_unused == 3
    text = fit.differences()
    assert '1 missing (in the model, not in the checkpoint): b.weight' in text
    assert '1 unexpected (in the checkpoint, not in the model): c.weight' in text
    assert '1 mis-shaped: a.weight (checkpoint [3, 3], model [2, 3])' in text


# --------------------------------------------------------------------- init_cfg Pretrained


DEMO_ARCH = dict(embed_dims=[32, 64, 128, 128], depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 4], mlp_ratios=[4] * 4,
                 sr_ratios=[4, 2, 1, 1], patch_sizes=[2, 2, 2, 2])


@pytest.mark.parametrize('form', ['dict', 'list'])
def test_pretrained_init_cfg_loads_every_tensor(checkpoints, form, tmp_path):
    """vitzoo and timm layouts, alone or in a list of initialisers (which used to skip the converters)."""
    path, classifier, _ = checkpoints
    timm_layout = timm_demo_twins().state_dict()
    converted = convert_state_dict(timm_layout)
    for arch, norms, source, expected in [(TINY_PCPVT, False, path, classifier),
                                          (DEMO_ARCH, [False] * 3 + [True], save(timm_layout, tmp_path / 't.pth'),
                                           converted)]:
        entry = dict(type='Pretrained', checkpoint=source, prefix='backbone.')
        init_cfg = entry if form == 'dict' else [dict(type='Constant', layer='Linear', val=3.), entry]
        backbone = PCPVT(arch=arch, norm_after_stage=norms, init_cfg=init_cfg)
        backbone.init_weights()
        state = backbone.state_dict()
        assert all(torch.equal(v, expected[f'backbone.{k}']) for k, v in state.items())


@pytest.mark.parametrize('form', ['dict', 'list'])
@pytest.mark.parametrize('kind', BAD)
def test_pretrained_init_cfg_refuses_bad_checkpoints(checkpoints, kind, form):
    _, _, bad = checkpoints
    path, message = bad[kind]
    entry = dict(type='Pretrained', checkpoint=path)
    backbone = PCPVT(arch=TINY_PCPVT, init_cfg=entry if form == 'dict' else [entry])
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    with pytest.raises((CheckpointMismatchError, UnreadableCheckpointError), match=message) as err:
        backbone.init_weights()
    assert path in str(err.value)
    assert all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items())  # nothing half-loaded


def test_pretrained_mismatch_names_layout_and_counts(checkpoints):
    _, _, bad = checkpoints
    backbone = PCPVT(arch=TINY_PCPVT, init_cfg=dict(type='Pretrained', checkpoint=bad['depth'][0]))
    with pytest.raises(CheckpointMismatchError) as err:
        backbone.init_weights()
    message = str(err.value)
    assert message.startswith(f"PCPVT: checkpoint {bad['depth'][0]} (vitzoo layout, keys under 'backbone.') "
                              'does not fit this backbone')
    assert '14 unexpected (in the checkpoint, not in the model): stages.2.blocks.1.norm1.weight' in message
    assert 'strict=False' in message


def test_partial_loading_only_when_asked_and_counted(checkpoints):
    _, _, bad = checkpoints
    path = bad['width'][0]
    wider = torch.load(path)['state_dict']
    backbone = PCPVT(arch=TINY_PCPVT, init_cfg=[dict(type='Pretrained', checkpoint=path, strict=False)])
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    backbone.init_weights()
    state = backbone.state_dict()
    kept = [k for k in state if state[k].shape != wider[f'backbone.{k}'].shape]
    assert kept and all(torch.equal(state[k], before[k]) for k in kept)
    assert all(torch.equal(v, wider[f'backbone.{k}']) for k, v in state.items() if k not in kept)
    report = PCPVT(arch=TINY_PCPVT).load_pretrained(path, strict=False)  # what init_weights logs
    assert report.summary().startswith(
        f'PARTIAL load from {path} (vitzoo layout, keys under \'backbone.\'): {len(state) - len(kept)} of '
        f'{len(state)} tensors loaded, {len(kept)} left at their initial values, {len(kept)} of the '
        f"checkpoint's {len(wider)} tensors unused\n  {len(kept)} mis-shaped: ")


def test_pretrained_entry_is_checked():
    for init_cfg, error, message in [
            (dict(type='Pretrained', checkpoint='x.pth', strict='no'), TypeError, 'strict must be a bool'),
            (dict(type='Pretrained', checkpoint='x.pth', revise_keys=[]), ValueError, 'revise_keys'),
            (dict(type='Pretrained'), ValueError, 'needs checkpoint='),
            ([dict(type='Pretrained', checkpoint='a.pth'), dict(type='Pretrained', checkpoint='b.pth')], ValueError,
             '2 Pretrained entries')]:
        with pytest.raises(error, match=message):
            PCPVT(arch=TINY_PCPVT, init_cfg=init_cfg).init_weights()


def test_dense_backbone_takes_a_classifier_checkpoint_with_its_declared_exceptions(checkpoints):
    """SVT's out_norms 0-2 are never in classification checkpoints; PiT's dense backbones have no
    token norm: both are declared by the family, everything else must fit."""
    from vitzoo.models import SVT, PiT
    svt_arch = dict(TINY_PCPVT, window_sizes=[7] * 4)
    cls = {f'backbone.{k}': v for k, v in randomized(SVT(arch=svt_arch, norm_after_stage=[False] * 3 + [True])).items()}
    path = save({'state_dict': cls}, pathlib.Path(checkpoints[0]).parent / 'svt.pth')
    dense = SVT(arch=svt_arch, init_cfg=dict(type='Pretrained', checkpoint=path))
    dense.init_weights()
    assert all(torch.equal(v, cls[f'backbone.{k}']) for k, v in dense.state_dict().items() if f'backbone.{k}' in cls)
    pit_arch = dict(base_dims=[16, 16, 16], depths=[1, 1, 1], num_heads=[1, 2, 4], patch_size=16, stride=8)
    cls = {f'backbone.{k}': v for k, v in randomized(PiT(arch=pit_arch, out_type='cls_token')).items()}
    path = save({'state_dict': cls}, pathlib.Path(checkpoints[0]).parent / 'pit.pth')
    featmap = PiT(arch=pit_arch, out_type='featmap', init_cfg=dict(type='Pretrained', checkpoint=path))
    featmap.init_weights()
    assert all(torch.equal(v, cls[f'backbone.{k}']) for k, v in featmap.state_dict().items())


# ------------------------------------------------------------------------------ get_model


@pytest.fixture(scope='module')
def demo_checkpoints(tmp_path_factory):
    """The demo classifier's state dict (random), and bad checkpoints for it."""
    tmp = tmp_path_factory.mktemp('demo_ckpts')
    model = vitzoo.get_model(DEMO_NAME)
    good = randomized(model)
    deeper = vitzoo.get_model(DEMO_NAME, backbone=dict(arch=dict(depths=[1, 1, 3, 1]))).state_dict()
    return good, {
        'good': save({'state_dict': good, 'meta': {}}, tmp / 'good.pth'),
        'depth': save({'state_dict': deeper}, tmp / 'deeper.pth'),
        'family': save({'state_dict': vitzoo.get_model(DEMO_NAME, backbone=dict(
            _delete_=True, type='vitzoo.DaViT', arch=dict(TINY_DAVIT, embed_dims=[32, 64, 128, 128]))).state_dict()},
            tmp / 'davit.pth'),
        'prefix': save({'state_dict': {f'model.{k}': v for k, v in good.items()}}, tmp / 'prefixed.pth'),
        'no-head': save({'state_dict': {k: v for k, v in good.items() if not k.startswith('head.')}},
                        tmp / 'no_head.pth'),
    }


def test_get_model_loads_strictly(demo_checkpoints, checkpoints):
    good, paths = demo_checkpoints
    model = vitzoo.get_model(DEMO_NAME, pretrained=paths['good'])
    assert all(torch.equal(v, good[k]) for k, v in model.state_dict().items())
    for kind, message in [('depth', r'(?s)does not fit this model.*unexpected.*stages\.2\.blocks\.2\..*strict=False'),
                          ('family', r'(?s)does not fit this model.*unexpected.*cpe1.*mis-shaped: .*\[32, 3, 7, 7\]'),
                          ('prefix', "fit once the prefix 'model.' is removed"),
                          ('no-head', r'(?s)2 missing .*head\.fc\.weight.*strict=False')]:
        with pytest.raises(CheckpointMismatchError, match=message) as err:
            vitzoo.get_model(DEMO_NAME, pretrained=paths[kind])
        assert f'ImageClassifier: checkpoint {paths[kind]} (vitzoo layout) ' in str(err.value)
    for kind in ('empty-file', 'truncated', 'bare-tensor', 'empty-state-dict'):
        path, message = checkpoints[2][kind]
        with pytest.raises(UnreadableCheckpointError, match=message):
            vitzoo.get_model(DEMO_NAME, pretrained=path)
    partial = vitzoo.get_model(DEMO_NAME, pretrained=paths['no-head'], strict=False)
    assert all(torch.equal(v, good[k]) for k, v in partial.state_dict().items() if not k.startswith('head.'))


@pytest.mark.kernel_path
def test_foreign_layout_is_converted_and_checked(tmp_path):
    """A timm-layout Twins state dict loads into vitzoo's model strictly, with its layout named."""
    reference = timm_demo_twins()
    model = vitzoo.get_model(DEMO_NAME)
    _, report = load_checkpoint_to_model(model, save(reference.state_dict(), tmp_path / 'timm_twins.pth'))
    assert report.layout == 'twins official/timm layout, converted' and report.fit.exact
    assert_parity(model.eval(), lambda m, x: m(x, mode='tensor'), reference.eval(), lambda r, x: r(x),
                  torch.rand(2, 3, 32, 32))


# ---------------------------------------------------------------------------------- tools


def log_text(work_dir) -> str:
    logs = glob.glob(osp.join(str(work_dir), '*', '*.log'))
    assert len(logs) == 1, logs
    return open(logs[0]).read()


@pytest.fixture(scope='module')
def tiny_config(digits_root, tmp_path_factory):
    return tiny_cls_config(DEMO, str(tmp_path_factory.mktemp('tiny_cfg')), digits_root, num_images=4)


@pytest.mark.parametrize('kind,message', [('depth', r'(?s)does not fit this model.*--partial'),
                                          ('family', r'(?s)does not fit this model.*--partial'),
                                          ('prefix', "holds no weights.*(?s:.*)prefix 'model.' is removed")])
def test_test_tool_refuses_checkpoints_that_do_not_fit(demo_checkpoints, tiny_config, kind, message, monkeypatch,
                                                       tmp_path):
    _, paths = demo_checkpoints
    with pytest.raises(CheckpointMismatchError, match=message) as err:
        run_tool_in_process(monkeypatch, 'test', tiny_config, paths[kind], '--work-dir', tmp_path)
    assert f'checkpoint {paths[kind]} (vitzoo layout)' in str(err.value)
    assert 'Evaluating' not in log_text(tmp_path) and 'accuracy/top1' not in log_text(tmp_path)


@pytest.mark.parametrize('kind', ['empty-file', 'truncated', 'empty-state-dict'])
def test_tools_refuse_unreadable_checkpoints(checkpoints, tiny_config, kind, monkeypatch, tmp_path):
    path, message = checkpoints[2][kind]
    with pytest.raises(UnreadableCheckpointError, match=message):
        run_tool_in_process(monkeypatch, 'test', tiny_config, path, '--work-dir', tmp_path / 'test')
    with pytest.raises(UnreadableCheckpointError, match=message):
        run_tool_in_process(monkeypatch, 'train', tiny_config, '--work-dir', tmp_path / 'train',
                       '--cfg-options', f'load_from={path}')
    assert not glob.glob(str(tmp_path / 'train' / '*.pth'))


def test_two_runs_of_one_config_in_one_second_keep_their_own_work_dirs(demo_checkpoints, tiny_config, monkeypatch,
                                                                       tmp_path):
    """MMEngine names a run's visualizer after the config and the second: without vitzoo's run names the
    second run would get the first one's visualizer and write its config into the first work dir."""
    _, paths = demo_checkpoints
    fixed = time.localtime()
    monkeypatch.setattr(time, 'localtime', lambda *args: fixed)
    for run in ('first', 'second'):
        run_tool_in_process(monkeypatch, 'test', tiny_config, paths['good'], '--work-dir', tmp_path / run)
    for run in ('first', 'second'):
        assert len(glob.glob(str(tmp_path / run / '*' / 'vis_data' / 'config.py'))) == 1, run


def test_test_tool_partial_loads_and_counts(demo_checkpoints, tiny_config, monkeypatch, tmp_path, capsys):
    _, paths = demo_checkpoints
    run_tool_in_process(monkeypatch, 'test', tiny_config, paths['no-head'], '--partial', '--work-dir', tmp_path)
    assert 'accuracy/top1' in capsys.readouterr().out
    log = log_text(tmp_path)
    assert f'PARTIAL load from {paths["no-head"]} (vitzoo layout): ' in log
    assert '2 left at their initial values, 0 of the checkpoint\'s' in log
    assert '2 missing (in the model, not in the checkpoint): head.fc.weight, head.fc.bias' in log


def test_train_tool_load_from_is_strict_and_partial_on_request(demo_checkpoints, tiny_config, monkeypatch, tmp_path):
    _, paths = demo_checkpoints
    with pytest.raises(CheckpointMismatchError, match=f'{paths["depth"]} .*does not fit this model') as err:
        run_tool_in_process(monkeypatch, 'train', tiny_config, '--work-dir', tmp_path / 'strict',
                       '--cfg-options', f'load_from={paths["depth"]}')
    assert '--partial' in str(err.value)
    assert not glob.glob(str(tmp_path / 'strict' / '*.pth'))  # no training happened
    run_tool_in_process(monkeypatch, 'train', tiny_config, '--work-dir', tmp_path / 'partial', '--partial',
                   '--cfg-options', f'load_from={paths["no-head"]}', 'train_cfg.max_epochs=1')
    log = log_text(tmp_path / 'partial')
    assert 'PARTIAL load from' in log and '2 left at their initial values' in log
    assert osp.exists(tmp_path / 'partial' / 'epoch_1.pth')
    # --resume of a weights-only file: a clear error, not a KeyError
    with pytest.raises(ValueError, match='holds weights only.*load_from='):
        run_tool_in_process(monkeypatch, 'train', tiny_config, '--work-dir', tmp_path / 'resume', '--resume',
                            paths['good'])
    with pytest.raises(SystemExit):
        run_tool_in_process(monkeypatch, 'train', tiny_config, '--resume', '--partial')


def test_test_tool_exits_nonzero_naming_the_file(demo_checkpoints, tiny_config, tmp_path):
    _, paths = demo_checkpoints
    proc = run_tool('tools/test.py', tiny_config, paths['depth'], '--work-dir', str(tmp_path), check=False)
    assert proc.returncode != 0
    assert f'CheckpointMismatchError: ImageClassifier: checkpoint {paths["depth"]}' in proc.stderr
    assert 'accuracy/top1' not in proc.stdout


# --------------------------------------------------------------------------- converters


def timm_demo_twins():
    """timm's Twins with the digits demo's arch and every parameter random: an official-layout model."""
    twins = pytest.importorskip('timm.models.twins')
    reference = twins.Twins(img_size=32, patch_size=2, embed_dims=(32, 64, 128, 128), depths=(1, 1, 2, 1),
                            num_heads=(1, 2, 4, 4), mlp_ratios=(4, 4, 4, 4), sr_ratios=(4, 2, 1, 1), num_classes=10)
    reference.load_state_dict(randomized(reference))
    return reference.eval()


def test_test_tool_on_a_foreign_layout_checkpoint(tiny_config, monkeypatch, tmp_path, capsys):
    """tools/test.py on a timm-layout file predicts what the converted file predicts, and what timm's
    model computes for the same image."""
    import mmcv
    import mmengine
    reference = timm_demo_twins()
    official = save(reference.state_dict(), tmp_path / 'official.pth')
    converted = tmp_path / 'converted.pth'
    converter_cli('twins', [official, str(converted)])  # tools/model_converters/twins2vitzoo.py
    assert f'it fits {DEMO_NAME} exactly' in capsys.readouterr().out  # the demo model is in the index
    preds = {}
    for name, path in (('official', official), ('converted', converted)):
        out = tmp_path / f'{name}.pkl'
        run_tool_in_process(monkeypatch, 'test', tiny_config, path, '--out', out, '--work-dir', tmp_path / name)
        preds[name] = mmengine.load(str(out))
    assert f'tensors from {official} (twins official/timm layout, converted)' in log_text(tmp_path / 'official')
    assert f'tensors from {converted} (vitzoo layout)' in log_text(tmp_path / 'converted')
    assert len(preds['official']) == 8
    for a, b in zip(preds['official'], preds['converted']):
        assert a['img_path'] == b['img_path'] and torch.equal(a['pred_score'], b['pred_score'])
    image = mmcv.imread(preds['official'][0]['img_path'])[:, :, ::-1].copy()
    x = (torch.from_numpy(image).permute(2, 0, 1).float()[None] - 127.5) / 127.5
    with torch.no_grad():
        expected = reference(x).softmax(-1)[0]
    torch.testing.assert_close(preds['official'][0]['pred_score'], expected, rtol=0, atol=1e-5)


def test_converter_writes_only_what_fits_a_model(tmp_path, capsys):
    """The converter refuses (writing nothing) a checkpoint that fits no model exactly."""
    reference = timm_demo_twins()
    truncated = {k: v for k, v in reference.state_dict().items() if not k.startswith('blocks.2.1.')}
    src, dst = save(truncated, tmp_path / 'truncated.pth'), tmp_path / 'x.pth'
    with pytest.raises(SystemExit) as exit_info:
        converter_cli('twins', [src, str(dst)])
    assert exit_info.value.code == 1 and not dst.exists()
    error = capsys.readouterr().err
    assert f'{src} (twins official/timm layout, converted) does not fit any twins model of the index' in error
    assert f'the closest, {DEMO_NAME}, differs' in error and '--config CONFIG' in error
    assert 'missing (in the model, not in the checkpoint): backbone.stages.2.blocks.1.' in error
    with pytest.raises(SystemExit):  # against a given model
        converter_cli('twins', [src, str(dst), '--config', 'twins-pcpvt-small_3rdparty_8xb128_in1k'])
    assert 'does not fit the model of twins-pcpvt-small_3rdparty_8xb128_in1k' in capsys.readouterr().err


# ------------------------------------------------------------------- distillation teacher


def test_distilled_pit_builds_and_predicts_without_its_teacher(served, monkeypatch, tmp_path):
    """The teacher checkpoint is fetched at the first training loss, never before."""
    monkeypatch.setenv('VITZOO_CACHE', str(tmp_path / 'cache'))
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    root, base_url = served
    closed = f'http://127.0.0.1:{free_port()}/regnety_160-a5fe301d.pth'
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'pit', 'pit-ti-distilled_8xb128_in1k.py'))
    assert cfg.model.teacher.model_name == 'regnety_160' and cfg.model.teacher_checkpoint.startswith('https://')
    student = cfg.model
    student.update(teacher_checkpoint=closed, data_preprocessor=cfg.data_preprocessor)  # nothing listens there
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(student)
        model.init_weights()
    assert not model.teacher_built and 'teacher=mmpretrain.TimmClassifier (built at the first' in repr(model)
    batch = dict(inputs=[torch.randint(0, 256, (3, 224, 224), dtype=torch.uint8)],
                 data_samples=[DataSample().set_gt_label(3)])
    assert model.val_step(batch)[0].pred_score.shape == (1000, )
    assert not model.teacher_built
    with pytest.raises(ConnectionError, match=closed.replace('.', r'\.')):  # fetched at the first loss
        model.train_step(batch, optim_wrapper=_sgd(model))
    # a small teacher served for real: built and loaded (strictly) at the first loss
    student.backbone.arch = dict(base_dims=[16, 16, 16], depths=[1, 1, 1], num_heads=[1, 2, 4], patch_size=16,
                                 stride=8)
    student.head.update(num_classes=10, in_channels=64)
    teacher = dict(type='vitzoo.ImageClassifier', backbone=dict(type='vitzoo.PCPVT', arch=TINY_PCPVT),
                   neck=dict(type='GlobalAveragePooling'), head=dict(type='LinearClsHead', num_classes=10,
                                                                    in_channels=64))
    student.teacher, student.data_preprocessor = teacher, dict(num_classes=10)
    batch = dict(inputs=[torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)],
                 data_samples=[DataSample().set_gt_label(3)])
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        weights = randomized(MODELS.build(teacher))
    student.teacher_checkpoint = f'{base_url}/{_publish(root, "teacher", {"state_dict": weights})}'
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(student)
    losses = model.train_step(batch, optim_wrapper=_sgd(model))
    assert model.teacher_built and set(losses) == {'loss', 'loss_cls', 'loss_distill'}
    assert all(torch.equal(v, weights[k]) for k, v in model.teacher.state_dict().items())
    assert 'teacher=ImageClassifier (frozen' in repr(model)
    # building the teacher draws nothing from the random generators (resumed runs build it later)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        student.teacher_checkpoint = None
        twin = MODELS.build(student)
    rng = torch.get_rng_state()
    assert twin.teacher is twin.teacher
    assert torch.equal(rng, torch.get_rng_state())


def _sgd(model):
    from mmengine.optim import OptimWrapper
    return OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))


def _publish(root, name: str, obj) -> str:
    import hashlib
    import io
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getvalue()
    filename = f'{name}-{hashlib.sha256(payload).hexdigest()[:8]}.pth'
    (root / filename).write_bytes(payload)
    return filename


# --------------------------------------------------------------------- images and labels


def test_unreadable_images_are_named(tmp_path):
    from mmengine.registry import TRANSFORMS

    from vitzoo.datasets import UnreadableImageError
    empty, corrupt = tmp_path / 'empty.png', tmp_path / 'corrupt.png'
    empty.write_bytes(b'')
    corrupt.write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(100))
    load = TRANSFORMS.build(dict(type='vitzoo.LoadImageFromFile'))
    with pytest.raises(UnreadableImageError, match=f'{empty}: the file is empty'):
        load(dict(img_path=str(empty)))
    with pytest.raises(UnreadableImageError, match=f'{corrupt} \\(108 bytes\\): not an image'):
        load(dict(img_path=str(corrupt)))
    with pytest.raises(UnreadableImageError, match='nowhere.png: it does not exist'):
        load(dict(img_path=str(tmp_path / 'nowhere.png')))
    assert TRANSFORMS.build(dict(type='vitzoo.LoadImageFromFile', ignore_empty=True))(dict(img_path=str(empty))) is None
    loaded = dict(img=np.zeros((4, 4, 3), np.uint8))  # mmpretrain's inferencer loads images itself
    assert load(loaded) is loaded
    model = vitzoo.get_model(DEMO_NAME)
    with pytest.raises(UnreadableImageError, match=f'{empty}: the file is empty'):
        vitzoo.inference_model(model, empty)
    for config in ('_base_/datasets/imagenet_bs64_swin_224.py', '_base_/datasets/coco_panoptic.py'):
        cfg = Config.fromfile(osp.join(REPO, 'configs', config))
        for pipeline in (cfg.train_pipeline, cfg.test_pipeline):
            assert pipeline[0]['type'] == 'vitzoo.LoadImageFromFile', config


def test_labels_beyond_num_classes_raise_naming_the_sample():
    from mmpretrain.structures import DataSample
    model = vitzoo.get_model(DEMO_NAME)
    sample = DataSample(metainfo=dict(img_path='val/7/0012.png')).set_gt_label(12)
    batch = dict(inputs=[torch.zeros(3, 32, 32, dtype=torch.uint8)], data_samples=[sample])
    with pytest.raises(ValueError, match=r'val/7/0012\.png has the label 12, but the model has num_classes=10'):
        model.test_step(batch)
    with pytest.raises(ValueError, match='num_classes=10'):
        model.train().train_step(batch, optim_wrapper=_sgd(model))
    batch['data_samples'] = [DataSample(metainfo=dict(img_path='ok.png')).set_gt_label(9)]
    assert model.eval().test_step(batch)[0].pred_score.shape == (10, )


def test_every_foreign_layout_is_named():
    """Errors and logs name the layout a checkpoint was recognised as (key tables of tests/data/keys)."""
    import json

    from vitzoo.models.checkpoint import convert_with_layout, strip_prefix

    def layout(table: str, name: str) -> str:
        with open(osp.join(REPO, 'tests', 'data', 'keys', table)) as f:
            keys = json.load(f)[name]
        return convert_with_layout({k: torch.empty(0) for k in keys})[0]

    expected = {
        ('official_state_dict_keys.json', 'twins_official.alt_gvt_small'): 'twins official/timm',
        ('official_state_dict_keys.json', 'pit_official.pit_ti_distilled'): 'pit official',
        ('official_state_dict_keys.json', 'davit_official.DaViT_tiny'): 'davit official',
        ('official_state_dict_keys.json', 'lvt_official.lvt_cls'): 'lvt official',
        ('official_state_dict_keys.json', 'lvt_seg'): 'lvt official',
        ('timm_shapes.json', 'twins_pcpvt_small'): 'twins official/timm',
        ('timm_shapes.json', 'davit_tiny'): 'davit timm',
        ('timm_shapes.json', 'pit_s_224'): 'pit timm',
        ('mmpretrain_classifier_shapes.json', 'twins-svt-small'): 'twins mmpretrain',
        ('mmpretrain_classifier_shapes.json', 'davit-tiny'): 'davit mmpretrain',
        ('mmpretrain_state_dict_keys.json', 'pcpvt_small'): 'twins mmpretrain',
    }
    assert {key: layout(*key) for key in expected} == {key: f'{v} layout, converted' for key, v in expected.items()}
    with open(osp.join(REPO, 'tests', 'data', 'keys', 'mmpretrain_state_dict_keys.json')) as f:
        backbone = strip_prefix({k: torch.empty(0) for k in json.load(f)['pcpvt_small']}, 'backbone.')
    assert convert_with_layout(backbone)[0] == 'twins mmpretrain backbone layout, converted'
    assert convert_with_layout(PCPVT(arch=TINY_PCPVT).state_dict())[0] == 'vitzoo layout'
