"""The model index and the Python API: list_models, get_model, inference_model; tools/test.py by name."""
import glob
import hashlib
import os.path as osp
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

import vitzoo
from vitzoo.apis.model import ModelHub, NoPublicWeightsError, load_model_index

from helpers import REPO, assert_parity, official_twins_norm_eps_, run_tool, run_tool_in_process, tiny_cls_config

DEMO_NAME = 'twins-pcpvt-tiny_1xb64_digits'
BIRD = osp.join(REPO, 'demo', 'bird.JPEG')
DIGIT = osp.join(REPO, 'demo', 'digit_3.png')


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / 'cache'
    monkeypatch.setenv('VITZOO_CACHE', str(path))
    return path


def publish(root, name: str, payload: bytes) -> str:
    """Serve ``payload`` as ``<name>-<sha256[:8]>.pth``; returns the file name."""
    filename = f'{name}-{hashlib.sha256(payload).hexdigest()[:8]}.pth'
    (root / filename).write_bytes(payload)
    return filename


def checkpoint_bytes(state_dict, tmp_path, meta=None) -> bytes:
    path = tmp_path / 'ckpt.pth'
    torch.save({'state_dict': state_dict, 'meta': meta or {}}, path)
    return path.read_bytes()


# ---------------------------------------------------------------- the index


def test_every_config_is_indexed_and_every_entry_has_a_config():
    models = ModelHub.all()
    indexed = {osp.realpath(m.config) for m in models}
    for info in models:
        assert osp.isfile(info.config), f'{info.name}: {info.config} does not exist'
    configs = {osp.realpath(p) for p in glob.glob(osp.join(REPO, 'configs', '*', '*.py')) if '_base_' not in p}
    assert configs - indexed == set(), 'configs without an entry in model-index.yml'
    with open(osp.join(REPO, 'model-index.yml')) as f:
        imported = yaml.safe_load(f)['Import']
    metafiles = glob.glob(osp.join(REPO, 'configs', '*', 'metafile.yml'))
    assert sorted(imported) == sorted(osp.relpath(p, REPO) for p in metafiles)


def test_index_entries_follow_openmmlab_conventions():
    for info in ModelHub.all():
        assert info.collection, info.name
        assert info.params and info.flops, f'{info.name}: Parameters and FLOPs must be measured'
        assert info.results and info.results[0].get('Task'), info.name
        if info.weights:
            assert '_3rdparty_' in info.name, 'converted third-party weights are named ..._3rdparty_...'
            assert re.search(r'-[0-9a-f]{8}\.pth$', info.weights), f'{info.weights}: no hash in the file name'
            assert info.converted_from.get('Weights') and info.converted_from.get('Code')
        if '_3rdparty_' in info.name:
            assert info.converted_from, f'{info.name} must say what it was converted from'


def test_weights_urls_are_mmpretrains_for_twins_and_davit():
    weights = {m.name: m.weights for m in ModelHub.all() if m.weights}
    assert weights['twins-pcpvt-small_3rdparty_8xb128_in1k'].endswith(
        'twins/twins-pcpvt-small_3rdparty_8xb128_in1k_20220126-ef23c132.pth')
    assert weights['davit-tiny_3rdparty_in1k'] == \
        'https://download.openmmlab.com/mmclassification/v0/davit/davit-tiny_3rdparty_in1k_20221116-700fdf7d.pth'
    assert {n.split('_')[0] for n in weights} == {
        'twins-pcpvt-small', 'twins-pcpvt-base', 'twins-pcpvt-large', 'twins-svt-small', 'twins-svt-base',
        'twins-svt-large', 'davit-tiny', 'davit-small', 'davit-base'}


def test_the_index_loads_with_modelindex():
    """mim and mmpretrain read model indexes with the modelindex package."""
    from modelindex.load_model_index import load
    index = load(osp.join(REPO, 'model-index.yml'))
    index.build_models_with_collections()
    assert len(index.models) == len(vitzoo.list_models())
    assert index.check(silent=True) == []


def test_list_models_filters():
    everything = vitzoo.list_models()
    assert everything == sorted(everything) and len(everything) == len(set(everything))
    assert vitzoo.list_models('davit') == ['davit-base_3rdparty_in1k', 'davit-small_3rdparty_in1k',
                                           'davit-tiny_3rdparty_in1k']
    assert vitzoo.list_models('twins-svt') == ['twins-svt-base_3rdparty_8xb128_in1k',
                                               'twins-svt-large_3rdparty_16xb64_in1k',
                                               'twins-svt-small_3rdparty_8xb128_in1k']
    assert vitzoo.list_models('pit', exclude_patterns=['*distilled']) == [
        'pit-b_3rdparty_8xb128_in1k', 'pit-s_3rdparty_8xb128_in1k', 'pit-ti_3rdparty_8xb128_in1k',
        'pit-xs_3rdparty_8xb128_in1k']
    assert vitzoo.list_models('*distilled_3rdparty') == [
        f'pit-{a}-distilled_3rdparty_8xb128_in1k' for a in ('b', 's', 'ti', 'xs')]
    classification = vitzoo.list_models(task='Image Classification')
    assert 'lvt_3rdparty_8xb128_in1k' in classification and DEMO_NAME in classification
    assert not any(n.startswith(('segformer', 'panoptic')) for n in classification)
    assert set(vitzoo.list_models(task='Semantic Segmentation')) == set(vitzoo.list_models('segformer'))
    assert vitzoo.list_models('no-such-model') == []


def test_import_vitzoo_stays_light():
    code = ('import sys, vitzoo; heavy = [m for m in ("torch", "mmpretrain", "mmseg", "mmdet", "vitzoo.models") '
            'if m in sys.modules]; names = vitzoo.list_models(); '
            'heavy += [m for m in ("torch", "mmpretrain") if m in sys.modules]; print(heavy, len(names))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ['[]', str(len(vitzoo.list_models()))]


@pytest.fixture
def fast_init(monkeypatch):
    """torch 2.14's trunc_normal_ is slow; the shape of the weights is all these tests need."""
    monkeypatch.setattr(torch.nn.init, 'trunc_normal_',
                        lambda t, mean=0., std=1., a=-2., b=2., generator=None: t.data.normal_(mean, std))


def test_get_model_builds_every_listed_name(fast_init):
    """Every name builds (training-only parts left out) with the index's parameter count."""
    for name in vitzoo.list_models():
        model = vitzoo.get_model(name)
        info = ModelHub.get(name)
        assert not model.training and model._metainfo.name == name
        assert sum(p.numel() for p in model.parameters()) == info.params, name
        del model


def test_get_model_from_config_path_and_overrides():
    model = vitzoo.get_model(osp.join(REPO, 'configs', 'demo', 'twins-pcpvt-tiny_1xb64_digits.py'),
                             head=dict(num_classes=7))
    assert model.head.fc.out_features == 7 and model._metainfo is None
    assert model.dataset_meta['classes'] == [str(d) for d in range(10)]


PREFIXED = ['demo/twins-pcpvt-tiny_1xb64_digits.py', 'segformer/segformer_lvt_1xb8-1k_toy-64x64.py',
            'panoptic_fpn/panoptic-fpn_lvt_fpn_1xb4-toy_coco.py']


@pytest.mark.parametrize('config', PREFIXED, ids=[c.split('/')[0] for c in PREFIXED])
def test_package_prefix_configs_build_what_the_config_file_builds(config, tmp_path):
    """``_base_ = 'vitzoo::...'`` puts every inherited dict in the ``vitzoo`` scope; the toolbox types
    in them (data preprocessors, transforms, metrics, hooks, visualizers) must still resolve, in the
    config's own toolbox, to what the same config builds when loaded by path."""
    from mmengine.config import Config
    from mmengine.hub import get_config
    from mmengine.registry import HOOKS, METRICS, MODELS, TRANSFORMS, VISUALIZERS, init_default_scope

    from vitzoo.engine.runtime import replace_syncbn
    user = tmp_path / 'mine.py'
    user.write_text(f"_base_ = 'vitzoo::{config}'\n")
    prefixed, direct = Config.fromfile(str(user)), Config.fromfile(osp.join(REPO, 'configs', config))
    assert prefixed.model._scope_ == 'vitzoo'  # what MMEngine does to a pkg:: base
    assert get_config(f'vitzoo::{config}').model.backbone == direct.model.backbone
    init_default_scope(direct.default_scope)

    def resolved_type(registry, cfg):
        """The class ``registry.build(cfg)`` would instantiate (the same scope switch, no instance)."""
        with registry.switch_scope_and_registry(cfg.get('_scope_')) as scoped:
            return scoped.get(cfg['type'])

    def built(cfg):
        model = MODELS.build(replace_syncbn(cfg.model))
        pipelines = [TRANSFORMS.build(t) for key in ('train_pipeline', 'test_pipeline') for t in cfg.get(key, [])]
        evaluators = cfg.val_evaluator if isinstance(cfg.val_evaluator, list) else [cfg.val_evaluator]
        metrics = [resolved_type(METRICS, e) for e in evaluators]  # built, they would read the annotations
        VISUALIZERS.build(dict(cfg.visualizer, name=f'vis-{id(cfg)}'))
        hooks = [HOOKS.build(h) for h in cfg.default_hooks.values()]
        return [type(m) for m in model.modules()], [type(t) for t in pipelines], metrics, [type(h) for h in hooks]

    (model_a, pipe_a, metrics_a, hooks_a), (model_b, pipe_b, metrics_b, hooks_b) = built(prefixed), built(direct)
    assert model_a == model_b and metrics_a == metrics_b and hooks_a == hooks_b
    # vitzoo's image loader (a subclass of mmcv's naming unreadable files) may stand in for mmcv's
    assert len(pipe_a) == len(pipe_b) and all(issubclass(a, b) for a, b in zip(pipe_a, pipe_b)), (pipe_a, pipe_b)
    assert any(t.__module__.startswith(direct.default_scope) for t in pipe_a + metrics_a)


def test_package_prefix_config_trains_through_tools_train(digits_root, tmp_path, monkeypatch):
    config = tiny_cls_config(osp.join(REPO, 'configs', PREFIXED[0]), str(tmp_path), digits_root, num_images=8)
    text = open(config).read().replace(repr(osp.join(REPO, 'configs', PREFIXED[0])), repr(f'vitzoo::{PREFIXED[0]}'))
    assert "'vitzoo::demo/" in text
    open(config, 'w').write(text)
    run_tool_in_process(monkeypatch, 'train', config, '--work-dir', str(tmp_path / 'work'))
    assert osp.exists(tmp_path / 'work' / 'epoch_1.pth')


def test_distilled_names_build_without_their_teacher():
    model = vitzoo.get_model('pit-ti-distilled_3rdparty_8xb128_in1k')
    assert type(model).__name__ == 'ImageClassifier' and model.backbone.distilled
    out = model(torch.rand(1, 3, 224, 224), mode='tensor')
    assert out.shape == (1, 1000)


def test_unknown_names_and_missing_weights_say_what_to_do():
    with pytest.raises(ValueError, match="Did you mean 'twins-svt-base_3rdparty_8xb128_in1k'"):
        vitzoo.get_model('twins-svt-base_8xb128_3rdparty_in1k')  # mmpretrain's spelling
    with pytest.raises(ValueError, match="Did you mean 'davit-tiny_3rdparty_in1k'"):
        vitzoo.get_model('davit-tiny')  # the arch name alone
    with pytest.raises(NoPublicWeightsError) as err:
        vitzoo.get_model('pit-s_3rdparty_8xb128_in1k', pretrained=True)
    message = str(err.value)
    assert 'pit_s_809.pth' in message and 'github.com/naver-ai/pit' in message
    assert 'tools/model_converters/pit2vitzoo.py' in message and "pretrained='pit_s_809.pth'" in message
    with pytest.raises(NoPublicWeightsError, match='lvt_imagenet.pth.tar'):
        vitzoo.get_model('lvt_3rdparty_8xb128_in1k', pretrained=True)
    with pytest.raises(NoPublicWeightsError, match='Train it'):
        vitzoo.get_model(DEMO_NAME, pretrained=True)
    with pytest.raises(FileNotFoundError, match='does not exist'):
        vitzoo.get_model(DEMO_NAME, pretrained='/no/such/checkpoint.pth')


# ---------------------------------------------------------------- weights from URLs


def test_pretrained_url_is_cached_and_hash_checked(served, cache, tmp_path):
    root, base = served
    source = vitzoo.get_model(DEMO_NAME)
    torch.nn.init.normal_(source.head.fc.weight)
    payload = checkpoint_bytes(source.state_dict(), tmp_path)
    filename = publish(root, 'digits-demo', payload)

    model = vitzoo.get_model(DEMO_NAME, pretrained=f'{base}/{filename}')
    assert torch.equal(model.head.fc.weight, source.head.fc.weight)
    assert (cache / filename).read_bytes() == payload
    (root / filename).unlink()  # the second call is served by the cache alone
    again = vitzoo.get_model(DEMO_NAME, pretrained=f'{base}/{filename}')
    assert torch.equal(again.head.fc.weight, source.head.fc.weight)

    # an interrupted download resumes from the partial file
    resumed = publish(root, 'digits-demo-copy', payload)
    (cache / f'{resumed}.part').write_bytes(payload[:len(payload) // 3])
    vitzoo.get_model(DEMO_NAME, pretrained=f'{base}/{resumed}')
    assert (cache / resumed).read_bytes() == payload

    (root / 'digits-demo-deadbeef.pth').write_bytes(payload)
    with pytest.raises(ValueError, match='corrupt'):
        vitzoo.get_model(DEMO_NAME, pretrained=f'{base}/digits-demo-deadbeef.pth')
    assert not (cache / 'digits-demo-deadbeef.pth').exists()
    with pytest.raises(ConnectionError, match='cannot download'):
        vitzoo.get_model(DEMO_NAME, pretrained=f'{base}/missing-12345678.pth')


def test_index_weights_go_through_the_same_checks(served, cache, tmp_path):
    """pretrained=True downloads the index's URL (here mapped to the test server): a file whose
    sha256 does not start with the hash in its name is refused."""
    root, base = served
    url = ModelHub.get('twins-pcpvt-small_3rdparty_8xb128_in1k').weights
    (root / osp.basename(url)).write_bytes(b'not the released checkpoint')
    with pytest.raises(ValueError, match='corrupt'):
        vitzoo.get_model('twins-pcpvt-small_3rdparty_8xb128_in1k', pretrained=True,
                         url_mapping=(r'https://download\.openmmlab\.com/mmclassification/v0/twins/', f'{base}/'))


@pytest.mark.kernel_path
def test_mmpretrain_checkpoint_layout_loads_strictly(served, cache, tmp_path):
    """The released weights are mmpretrain classifiers: served in that layout they load strictly
    into vitzoo's model (converted on load) and give mmpretrain's Twins' logits."""
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        reference = MODELS.build(dict(
            type='mmpretrain.ImageClassifier',
            backbone=dict(type='mmpretrain.PCPVT', arch='small', qkv_bias=True,  # as its configs
                          norm_after_stage=[False] * 3 + [True]),
            neck=dict(type='GlobalAveragePooling'), head=dict(type='LinearClsHead', num_classes=1000, in_channels=512)))
    reference.init_weights()
    official_twins_norm_eps_(reference).eval()  # mmpretrain's one eps would move the maps by ~1e-5
    assert 'backbone.position_encodings.0.proj.weight' in reference.state_dict()  # mmpretrain's layout
    root, base = served
    filename = publish(root, 'twins-pcpvt-small_mmpretrain', checkpoint_bytes(reference.state_dict(), tmp_path))
    model = vitzoo.get_model('twins-pcpvt-small_3rdparty_8xb128_in1k', pretrained=f'{base}/{filename}')
    assert_parity(model.eval(), lambda m, x: m(x, mode='tensor'), reference, lambda r, x: r(x, mode='tensor'),
                  torch.rand(1, 3, 224, 224))


@pytest.mark.kernel_path
def test_a_downloaded_timm_checkpoint_loads_by_path(tmp_path):
    """The advice for models without a direct download: pass the downloaded file's path."""
    timm = pytest.importorskip('timm')
    reference = timm.create_model('pit_ti_224').eval()
    path = tmp_path / 'pit_ti_224.pth'
    torch.save(reference.state_dict(), path)  # a flat state dict, as the official files are
    model = vitzoo.get_model('pit-ti_3rdparty_8xb128_in1k', pretrained=str(path))
    assert_parity(model.eval(), lambda m, x: m(x, mode='tensor'), reference, lambda r, x: r(x),
                  torch.rand(1, 3, 224, 224))


# ---------------------------------------------------------------- inference


def test_inference_classification_fields():
    from mmpretrain.datasets.categories import IMAGENET_CATEGORIES
    model = vitzoo.get_model('twins-pcpvt-small_3rdparty_8xb128_in1k')
    result = vitzoo.inference_model(model, BIRD)
    assert set(result) == {'pred_label', 'pred_score', 'pred_class', 'pred_scores'}
    assert isinstance(result['pred_label'], int) and 0 <= result['pred_label'] < 1000
    assert isinstance(result['pred_score'], float) and 0 < result['pred_score'] <= 1
    assert result['pred_class'] == IMAGENET_CATEGORIES[result['pred_label']]
    assert result['pred_scores'].shape == (1000, )
    assert result['pred_scores'].sum() == pytest.approx(1, abs=1e-4)
    assert result['pred_score'] == pytest.approx(float(result['pred_scores'].max()))
    # an array in (BGR, as mmcv reads it) and a batch give the same
    import mmcv
    batch = vitzoo.inference_model(model, [mmcv.imread(BIRD), BIRD])
    assert [r['pred_label'] for r in batch] == [result['pred_label']] * 2
    np.testing.assert_allclose(batch[0]['pred_scores'], result['pred_scores'], atol=1e-6)


def test_inference_takes_path_objects():
    import pathlib
    model = vitzoo.get_model(DEMO_NAME)
    digit = pathlib.Path(DIGIT)
    by_path, by_str = vitzoo.inference_model(model, digit), vitzoo.inference_model(model, DIGIT)
    np.testing.assert_array_equal(by_path['pred_scores'], by_str['pred_scores'])
    assert [r['pred_label'] for r in vitzoo.inference_model(model, [digit, DIGIT])] == [by_str['pred_label']] * 2
    with pytest.raises(TypeError, match='image paths or HxWx3 arrays, got int'):
        vitzoo.inference_model(model, 3)


def test_inference_by_name_with_the_seed_usage():
    """``inference_model(NAME, 'demo/bird.JPEG')`` as in the docs (here with initialised weights)."""
    result = vitzoo.inference_model('davit-tiny_3rdparty_in1k', BIRD, pretrained=False)
    assert isinstance(result['pred_class'], str) and result['pred_scores'].shape == (1000, )
    with pytest.raises(NoPublicWeightsError):
        vitzoo.inference_model('lvt_3rdparty_8xb128_in1k', BIRD)


def test_inference_semantic_segmentation_fields():
    name = 'segformer_lvt_1xb8-1k_toy-64x64'
    result = vitzoo.inference_model(name, BIRD, pretrained=False)
    classes = ('person', 'car', 'ball', 'road', 'sky', 'grass')
    assert tuple(result['classes']) == classes
    assert result['pred_sem_seg'].shape == (240, 320) and result['pred_sem_seg'].dtype == np.int64
    assert 0 <= result['pred_sem_seg'].min() and result['pred_sem_seg'].max() < len(classes)
    assert result['seg_logits'].shape == (len(classes), 240, 320)
    np.testing.assert_array_equal(result['seg_logits'].argmax(0), result['pred_sem_seg'])


def test_inference_panoptic_segmentation_fields():
    from mmdet.structures import INSTANCE_OFFSET
    result = vitzoo.inference_model('panoptic-fpn_lvt_fpn_1xb4-toy_coco', BIRD, pretrained=False)
    assert result['pred_panoptic_seg'].shape == (240, 320) and result['pred_panoptic_seg'].dtype == np.int64
    classes = result['classes']
    assert len(classes) == 6
    ids = set(np.unique(result['pred_panoptic_seg']).tolist())
    assert {s['id'] for s in result['segments']} == ids - {len(classes)}  # all but void
    for segment in result['segments']:
        assert segment['category_id'] == segment['id'] % INSTANCE_OFFSET
        assert segment['label'] == classes[segment['category_id']]
        assert segment['area'] == int((result['pred_panoptic_seg'] == segment['id']).sum())


def test_trained_demo_checkpoint_predicts_the_digit(trained_demo):
    _, checkpoint = trained_demo
    model = vitzoo.get_model(DEMO_NAME, pretrained=checkpoint)
    assert model.dataset_meta['classes'] == [str(d) for d in range(10)]  # from the checkpoint's meta
    result = vitzoo.inference_model(model, DIGIT)
    assert result['pred_class'] == '3' and result['pred_label'] == 3, result


# ---------------------------------------------------------------- tools/test.py (by name: also test_analysis_tools)


def test_test_tool_explains_models_without_weights():
    proc = run_tool('tools/test.py', 'pit-b-distilled_3rdparty_8xb128_in1k', check=False)
    assert proc.returncode != 0
    assert 'pit_b_distill_840.pth' in proc.stderr
    assert 'tools/test.py pit-b-distilled_3rdparty_8xb128_in1k' in proc.stderr


def test_readme_tables_are_generated_from_the_index():
    proc = run_tool('tools/misc/model_tables.py', '--check', check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(osp.join(REPO, 'README.md')) as f:
        readme = f.read()
    for info in load_model_index(osp.join(REPO, 'model-index.yml')).values():
        assert f'`{info.name}`' in readme
