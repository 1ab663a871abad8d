"""tools/analysis_tools: get_flops, benchmark, analyze_logs, confusion_matrix."""
import glob
import json
import os.path as osp
import re

import mmengine
import pytest
import torch

from vitzoo.apis.model import ModelHub

from helpers import run_tool

DEMO_NAME = 'twins-pcpvt-tiny_1xb64_digits'

# The published FLOPs (G) of shared/seeds and the papers: Twins as mmpretrain's table (attention
# matmuls excluded), DaViT as mmpretrain's table, PiT as its README (distilled models: the same),
# LVT as its README (the whole ImageNet model, 0.889 G), SegFormer-LVT at 512x512 (LVT README).
PUBLISHED_GFLOPS = {
    'twins-pcpvt-small_3rdparty_8xb128_in1k': 3.67,
    'twins-pcpvt-base_3rdparty_8xb128_in1k': 6.45,
    'twins-pcpvt-large_3rdparty_16xb64_in1k': 9.51,
    'twins-svt-small_3rdparty_8xb128_in1k': 2.82,
    'twins-svt-base_3rdparty_8xb128_in1k': 8.35,
    'twins-svt-large_3rdparty_16xb64_in1k': 14.82,
    'davit-tiny_3rdparty_in1k': 4.54,
    'davit-small_3rdparty_in1k': 8.80,
    'davit-base_3rdparty_in1k': 15.51,
    'pit-ti_3rdparty_8xb128_in1k': 0.71,
    'pit-xs_3rdparty_8xb128_in1k': 1.4,
    'pit-s_3rdparty_8xb128_in1k': 2.9,
    'pit-b_3rdparty_8xb128_in1k': 12.5,
    'pit-ti-distilled_3rdparty_8xb128_in1k': 0.71,
    'pit-xs-distilled_3rdparty_8xb128_in1k': 1.4,
    'pit-s-distilled_3rdparty_8xb128_in1k': 2.9,
    'pit-b-distilled_3rdparty_8xb128_in1k': 12.5,
    'lvt_3rdparty_8xb128_in1k': 0.9,
    'segformer_lvt_8xb2-160k_ade20k-512x512': 10.6,
}


def test_get_flops_reproduces_the_published_flops(tmp_path):
    out = tmp_path / 'flops.json'
    proc = run_tool('tools/analysis_tools/get_flops.py', *PUBLISHED_GFLOPS, '--json', str(out))
    rows = {row['model']: row for row in json.loads(out.read_text())}
    for name, published in PUBLISHED_GFLOPS.items():
        row = rows[name]
        assert row['flops'] / 1e9 == pytest.approx(published, rel=0.02), name
        twins = name.startswith('twins')
        assert row['include_attention'] is not twins and row['family'] == ('Twins' if twins else row['family'])
        assert row['flops'] == row['macs_without_attention'] + (0 if twins else row['attention_macs'])
        info = ModelHub.get(name)  # the index holds what the tool measures
        assert (row['params'], row['flops']) == (info.params, info.flops), name
    assert 'excluded (Twins paper)' in proc.stdout and 'included (DaViT paper)' in proc.stdout
    assert 'included (PiT paper)' in proc.stdout and 'included (LVT paper)' in proc.stdout
    # Twins with its attention matmuls (GSA and LSA) counted: about 4% more for SVT-S
    svt = rows['twins-svt-small_3rdparty_8xb128_in1k']
    assert (svt['macs_without_attention'] + svt['attention_macs']) / 1e9 == pytest.approx(2.93, abs=0.01)


def test_get_flops_convention_switch_and_shape():
    from vitzoo.apis import get_model_complexity
    auto = get_model_complexity('twins-pcpvt-tiny_1xb64_digits')
    assert auto.input_shape == (32, 32) and not auto.include_attention
    included = get_model_complexity('twins-pcpvt-tiny_1xb64_digits', attn_matmuls='include')
    assert included.macs == auto.macs + auto.attention_macs and auto.attention_macs > 0
    bigger = get_model_complexity('twins-pcpvt-tiny_1xb64_digits', shape=(64, 64), attn_matmuls='exclude')
    assert bigger.input_shape == (64, 64) and bigger.macs == pytest.approx(4 * auto.macs, rel=0.05)
    with pytest.raises(ValueError, match='attn_matmuls'):
        get_model_complexity('twins-pcpvt-tiny_1xb64_digits', attn_matmuls='sometimes')


def test_attention_matmuls_are_told_apart_from_parametric_ones():
    """q@k^T / attn@v (activation x activation, eager or fused) are attention; linear layers and
    LVT's value transform (an einsum with a weight) are not."""
    from torch import nn

    from vitzoo.apis import count_macs
    from vitzoo.models.layers import scaled_dot_product_attention

    class Toy(nn.Module):

        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(8, 8)
            self.weight = nn.Parameter(torch.randn(8, 8))

        def forward(self, x, fused):
            x = self.proj(x)  # 16 * 8 * 8
            x = torch.einsum('bnc,cd->bnd', x, self.weight)  # 16 * 8 * 8
            q = x.view(1, 2, 16, 4)
            return scaled_dot_product_attention(q, q, q, fused=fused)  # 2 * (2 * 16 * 16 * 4)

    toy, x = Toy(), torch.randn(1, 16, 8)
    for fused in (False, True):
        assert count_macs(toy, toy, x, fused) == (2 * 16 * 8 * 8, 2 * 2 * 16 * 16 * 4)


def test_benchmark_against_timm(tmp_path):
    out = tmp_path / 'bench.json'
    names = ['twins-pcpvt-small_3rdparty_8xb128_in1k', 'davit-tiny_3rdparty_in1k', 'pit-ti_3rdparty_8xb128_in1k',
             'lvt_3rdparty_8xb128_in1k', 'segformer_lvt_1xb8-1k_toy-64x64']
    proc = run_tool('tools/analysis_tools/benchmark.py', *names, '--compare', 'timm', '--batch-size', '2',
                    '--shape', '64', '--warmup', '1', '--iters', '1', '--rounds', '2', '--json', str(out))
    reports = {r['model']: r for r in json.loads(out.read_text())}
    for name in names[:3]:
        report = reports[name]
        assert report['max_logits_difference'] < 1e-4, name  # the same variant: same logits, same weights
        assert [r['mode'] for r in report['results']] == ['infer', 'train']
        for row in report['results']:
            assert row['vitzoo']['img_per_s'] > 0 and row['timm']['img_per_s'] > 0
            assert row['ratio'] == pytest.approx(row['vitzoo']['img_per_s'] / row['timm']['img_per_s'])
            assert row['vitzoo']['peak_mem_bytes'] is not None
    assert len(re.findall(r'ratio vitzoo/timm \((infer|train)\): [\d.]+x img/s', proc.stdout)) == 6
    for timm_name in ('twins_pcpvt_small', 'davit_tiny', 'pit_ti_224'):
        assert f'timm {timm_name}' in proc.stdout
    # models without a timm counterpart are timed alone; a segmentor runs predict and loss
    assert 'timm has no implementation of LVT' in proc.stdout
    assert 'timm has classifiers only, no counterpart of EncoderDecoder' in proc.stdout
    for name in names[3:]:
        rows = reports[name]['results']
        assert [r['mode'] for r in rows] == ['infer', 'train'] and 'timm' not in rows[0]
        assert all(r['vitzoo']['img_per_s'] > 0 for r in rows)


def test_analyze_logs_draws_curves(trained_demo, tmp_path):
    work_dir, _ = trained_demo
    scalars = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    assert len(scalars) == 1
    by_iter = tmp_path / 'by_iter.png'
    proc = run_tool('tools/analysis_tools/analyze_logs.py', 'plot_curve', work_dir, '--out', str(by_iter))
    assert 'loss, accuracy/top1 vs iter' in proc.stdout
    by_epoch = tmp_path / 'by_epoch.png'
    run_tool('tools/analysis_tools/analyze_logs.py', 'plot_curve', scalars[0], scalars[0], '--keys', 'loss', 'lr',
             'accuracy/top1', '--xaxis', 'epoch', '--legend', 'a', 'b', '--out', str(by_epoch))
    for image in (by_iter, by_epoch):
        assert image.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and image.stat().st_size > 10_000
    timing = run_tool('tools/analysis_tools/analyze_logs.py', 'cal_train_time', work_dir)
    assert 's/iter' in timing.stdout
    missing = run_tool('tools/analysis_tools/analyze_logs.py', 'plot_curve', work_dir, '--keys', 'nope',
                       '--out', str(tmp_path / 'x.png'), check=False)
    assert missing.returncode != 0 and "no log holds the key 'nope'" in missing.stderr


def test_confusion_matrix_from_checkpoint_and_from_test_predictions(trained_demo, digits_root, tmp_path):
    """tools/test.py by model name dumps predictions; the confusion matrix from them equals the one
    computed from the checkpoint."""
    _, checkpoint = trained_demo
    data = [f'test_dataloader.dataset.data_root={digits_root}', 'test_dataloader.num_workers=0',
            'test_dataloader.persistent_workers=False']
    preds = tmp_path / 'preds.pkl'
    test = run_tool('tools/test.py', DEMO_NAME, checkpoint, '--out', str(preds), '--work-dir', str(tmp_path / 'eval'),
                    '--cfg-options', *data)
    top1 = float(re.findall(r'accuracy/top1: ([\d.]+)', test.stdout)[-1])
    assert 70 < top1 <= 100

    results = {}
    for source in (str(preds), checkpoint):
        image, matrix = tmp_path / f'cm_{len(results)}.png', tmp_path / f'cm_{len(results)}.pkl'
        proc = run_tool('tools/analysis_tools/confusion_matrix.py', DEMO_NAME, source, '--show-path', str(image),
                        '--out', str(matrix), '--include-values', '--cfg-options', *data)
        assert image.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
        assert f'accuracy: {top1:.2f}% ' in proc.stdout
        assert re.search(r'^\s+3\s+(\d+\s+){10}\s*[\d.]+%$', proc.stdout, re.M)  # the row of class '3'
        results[source] = mmengine.load(str(matrix))
    first, second = results.values()
    assert first.shape == (10, 10) and torch.equal(first, second) and int(first.sum()) == 359
