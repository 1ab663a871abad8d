"""tools/analysis_tools: get_flops, benchmark, analyze_logs, confusion_matrix."""
import glob
import json
import os.path as osp
import re

import mmengine
import pytest
import torch

from vitzoo.apis.model import ModelHub
from vitzoo.models.linear import linear_mode

from helpers import REPO, digits_test_options, load_tool, run_tool

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
    proc = run_tool('tools/analysis_tools/benchmark.py', *names, '--compare', 'timm', 'aten', '--batch-size', '2',
                    '--shape', '64', '--warmup', '1', '--iters', '1', '--rounds', '2', '--json', str(out))
    reports = {r['model']: r for r in json.loads(out.read_text())}
    for name in names[:3]:
        report = reports[name]
        assert report['max_logits_difference'] < 1e-4, name  # the same variant: same logits, same weights
        assert report['machine']['cpu_signature']['isa'] and report['linear_mode'] == 'auto'
        assert [r['mode'] for r in report['results']] == ['infer', 'train']
        for row in report['results']:
            assert row['vitzoo']['img_per_s'] > 0 and row['timm']['img_per_s'] > 0
            assert row['vitzoo']['peak_mem_bytes'] is not None
            # ratios: the median of the rounds' ratios (the models alternate within a round)
            for key, a, b in (('ratio', 'vitzoo', 'timm'), ('kernel_gain', 'vitzoo', 'vitzoo_aten'),
                              ('aten_ratio', 'vitzoo_aten', 'timm')):
                rounds = [x / y for x, y in zip(row[a]['img_per_s_rounds'], row[b]['img_per_s_rounds'])]
                assert len(rounds) == 2 and row[key] == pytest.approx(sum(rounds) / 2)
            # counted from the timed calls: the ATen runner ran ATen only, both ran the same forward products
            ours, aten = row['vitzoo']['linear_kernels'], row['vitzoo_aten']['linear_kernels']
            assert all(key.endswith('/aten') for key in aten)
            forwards = [sum(c for k, c in counts.items() if k.startswith('forward')) for counts in (ours, aten)]
            assert forwards[0] == forwards[1] > 0
            if row['mode'] == 'train':  # every gradient product of the kernel choice is counted
                assert sum(c for k, c in ours.items() if k.startswith('input_grad')) == forwards[0]
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


def _bench_rows(report):
    return {row['mode']: row for row in report['results']}


@pytest.mark.slow  # ~16 s on 2 cores: over the non-slow budget with the other new tests
def test_benchmark_gflops_and_matmul_peak(tmp_path):
    """GFLOP/s = the counter's FLOPs x img/s (3x for a training step), as a fraction of the matmul peak
    measured in the same run."""
    from vitzoo.apis import get_model_complexity
    out = tmp_path / 'bench.json'
    name = 'pit-ti_3rdparty_8xb128_in1k'
    load_tool('analysis_tools/benchmark').main(
        [name, '--compare', 'timm', '--batch-size', '2', '--shape', '64', '--warmup', '1', '--iters', '1',
         '--rounds', '1', '--threads', '2', '--matmul-size', '256', '--json', str(out)])
    report = json.loads(out.read_text())[0]
    assert report['machine']['torch_threads'] == 2 and report['machine']['torch'] == torch.__version__
    assert report['command'].startswith('python tools/analysis_tools/benchmark.py ' + name)
    peak = report['matmul_peak']
    assert peak['n'] == 256 and peak['gflop_per_s'] == pytest.approx(2 * 256**3 / peak['seconds'] / 1e9)
    assert peak['gflop_per_s'] == max(peak['gflop_per_s_by_kernel'].values())  # the faster of torch.mm and oneDNN
    assert peak['gflop_per_s_by_kernel'][peak['kernel']] == pytest.approx(peak['gflop_per_s'])
    assert report['linear_mode'] == linear_mode()
    # forward FLOPs per image: 2 x the MACs get_flops.py counts (attention matmuls included), same for timm
    c = get_model_complexity(name, shape=(64, 64), attn_matmuls='include')
    assert report['flops_per_image']['vitzoo'] == 2 * (c.macs_without_attention + c.attention_macs)
    assert report['flops_per_image']['timm'] == report['flops_per_image']['vitzoo']
    rows = _bench_rows(report)
    for mode, factor in (('infer', 1), ('train', 3)):
        for key in ('vitzoo', 'timm'):
            entry = rows[mode][key]
            gflops = factor * report['flops_per_image'][key] * entry['img_per_s'] / 1e9
            assert entry['gflop_per_s'] == pytest.approx(gflops, rel=1e-9)
            assert entry['peak_fraction'] == pytest.approx(gflops / peak['gflop_per_s'], rel=1e-9)
        assert rows[mode]['ratio'] == pytest.approx(  # one round: the ratio of that round
            rows[mode]['vitzoo']['img_per_s_rounds'][0] / rows[mode]['timm']['img_per_s_rounds'][0])
        assert 'with_cp' not in rows[mode]  # only with --with-cp-memory


@pytest.mark.slow
def test_benchmark_with_cp_memory(tmp_path):
    """with_cp=True recomputes PiT-Ti's block activations in the backward: a smaller training peak."""
    out = tmp_path / 'cp.json'
    load_tool('analysis_tools/benchmark').main(
        ['pit-ti_3rdparty_8xb128_in1k', '--mode', 'train', '--batch-size', '2', '--shape', '224', '--warmup', '1',
         '--iters', '1', '--rounds', '1', '--with-cp-memory', '--matmul-size', '64', '--json', str(out)])
    cp = _bench_rows(json.loads(out.read_text())[0])['train']['with_cp']
    assert cp['ratio'] == pytest.approx(cp['peak_mem_bytes_with'] / cp['peak_mem_bytes_without'])
    assert cp['peak_mem_bytes_without'] > 20 * 2**20 and cp['ratio'] < 0.7 and cp['process'] == 'separate'


def test_benchmark_shape_sweep_writes_table_and_plot(tmp_path):
    from vitzoo.apis import get_model_complexity
    out, plot = tmp_path / 'sweep.json', tmp_path / 'sweep.png'
    load_tool('analysis_tools/benchmark').main(
        [DEMO_NAME, '--mode', 'infer', '--batch-size', '1', '--sweep-shape', '32', '64', '--warmup', '1', '--iters',
         '1', '--rounds', '1', '--matmul-size', '64', '--json', str(out), '--plot', str(plot)])
    reports = json.loads(out.read_text())
    assert [(r['model'], r['shape'], r['sweep']) for r in reports] == [(DEMO_NAME, [32, 32], True),
                                                                       (DEMO_NAME, [64, 64], True)]
    for report in reports:  # the FLOPs at each size, as get_flops.py counts them
        c = get_model_complexity(DEMO_NAME, shape=tuple(report['shape']), attn_matmuls='include')
        assert report['flops_per_image']['vitzoo'] == 2 * (c.macs_without_attention + c.attention_macs)
    small, large = (r['flops_per_image']['vitzoo'] for r in reports)
    assert 4 * small < large < 5 * small  # 4x the pixels; attention matmuls grow faster
    assert all(_bench_rows(r)['infer']['vitzoo']['img_per_s'] > 0 for r in reports)
    assert plot.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and plot.stat().st_size > 10_000


def test_benchmark_new_argument_errors(capsys):
    benchmark = load_tool('analysis_tools/benchmark')
    for extra, message in ((['--plot', 'x.png'], '--plot draws a --sweep-shape run'),
                           (['--with-cp-memory', '--mode', 'infer'], 'measures training steps'),
                           (['--compile', '--backend', 'onnxruntime', '--device', 'cpu'], 'no --compile')):
        with pytest.raises(SystemExit):
            benchmark.parse_args([DEMO_NAME, *extra])
        assert message in capsys.readouterr().err


@pytest.mark.slow
def test_benchmark_compile_reports_compile_time_and_ratios(tmp_path):
    from torch._dynamo.utils import counters
    counters.clear()
    out = tmp_path / 'compile.json'
    load_tool('analysis_tools/benchmark').main(
        ['pit-ti_3rdparty_8xb128_in1k', '--compare', 'timm', '--compile', '--batch-size', '2', '--shape', '64',
         '--warmup', '1', '--iters', '1', '--rounds', '1', '--matmul-size', '64', '--json', str(out)])
    rows = _bench_rows(json.loads(out.read_text())[0])
    for row in rows.values():
        for key in ('vitzoo_compiled', 'timm_compiled'):
            assert row[key]['compile_s'] > 0 and row[key]['img_per_s'] > 0 and row[key]['gflop_per_s'] > 0
        assert row['compiled_ratio'] == pytest.approx(row['vitzoo_compiled']['img_per_s'] /
                                                      row['timm_compiled']['img_per_s'])
        assert row['compile_speedup'] == pytest.approx(row['vitzoo_compiled']['img_per_s'] /
                                                       row['vitzoo']['img_per_s'])
    assert counters['stats']['unique_graphs'] >= 4  # dynamo compiled both models' inference and loss


def test_train_compile_flag_sets_mmengine_compile(monkeypatch):
    """tools/train.py --compile is MMEngine's ``cfg.compile = True`` (torch.compile of the train step)."""
    import sys

    from mmengine.config import Config
    train = load_tool('train')
    config = osp.join(REPO, 'configs', 'demo', 'twins-pcpvt-tiny_1xb64_digits.py')
    monkeypatch.setenv('LOCAL_RANK', '0')
    for extra, expected in (([], None), (['--compile'], True)):
        monkeypatch.setattr(sys, 'argv', ['train.py', config, *extra])
        args = train.parse_args()
        assert train.merge_args(Config.fromfile(config), args).get('compile') is expected


def test_readme_speed_section_matches_speed_json(tmp_path, capsys):
    """README.md shows what tools/analysis_tools/speed.json records (no timing here); a changed JSON is stale."""
    speed_table = load_tool('analysis_tools/speed_table')
    json_path = osp.join(REPO, 'tools', 'analysis_tools', 'speed.json')
    assert speed_table.main(['--check']) == 0, capsys.readouterr().out
    merged = json.loads(open(json_path).read())
    with open(osp.join(REPO, 'README.md')) as f:
        block = f.read().split(speed_table.START)[1].split(speed_table.END)[0]
    for report in merged['main']:
        rows = _bench_rows(report)
        assert f'`{report["model"]}`' in block
        if 'ratio' in rows['infer']:
            assert f'{rows["infer"]["ratio"]:.2f}' in block and f'{rows["train"]["ratio"]:.2f}' in block
    for report in merged.get('dense', []):
        assert f'`{report["model"]}` | {report["shape"][0]}x{report["shape"][1]}' in block
    assert merged['sweep'] and osp.isfile(osp.join(REPO, 'docs', 'speed_sweep.png'))
    changed = tmp_path / 'speed.json'
    entry = merged['main'][0]['results'][0]['vitzoo']
    entry['img_per_s_rounds'] = [v * 1.5 for v in entry['img_per_s_rounds']]  # the ratios come from the rounds
    changed.write_text(json.dumps(merged))
    assert speed_table.main(['--check', '--json', str(changed)]) == 1
    assert 'stale' in capsys.readouterr().out


def test_speed_table_merge_files_reports_by_kind(tmp_path):
    speed_table = load_tool('analysis_tools/speed_table')
    row = dict(mode='infer', vitzoo=dict(img_per_s=1.0, peak_mem_bytes=None))
    runs = [[dict(model='a', results=[row], sweep=False)], [dict(model='b', results=[row], sweep=True)],
            [dict(model='c', results=[dict(row, vitzoo_compiled=row['vitzoo'])], sweep=False)],
            [dict(model='d', task='EncoderDecoder', results=[row], sweep=False)]]
    paths = []
    for i, run in enumerate(runs):
        paths.append(tmp_path / f'{i}.json')
        paths[-1].write_text(json.dumps(run))
    out = tmp_path / 'speed.json'
    assert speed_table.main(['--merge', *map(str, paths), '--json', str(out)]) == 0
    merged = json.loads(out.read_text())
    assert {k: [r['model'] for r in v] for k, v in merged.items()} == dict(main=['a'], dense=['d'], sweep=['b'],
                                                                           compile=['c'])
    # a new run of one kind replaces that kind only
    paths[0].write_text(json.dumps([dict(model='e', results=[row], sweep=False)]))
    assert speed_table.main(['--merge', str(paths[0]), '--json', str(out)]) == 0
    merged = json.loads(out.read_text())
    assert {k: [r['model'] for r in v] for k, v in merged.items()} == dict(main=['e'], dense=['d'], sweep=['b'],
                                                                           compile=['c'])


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
    data = digits_test_options(digits_root)
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


@pytest.mark.slow  # one minute of compilation; the backbones' fullgraph compile is in the contract suite
def test_test_tool_compile_gives_the_eager_top1(trained_demo, digits_root, tmp_path):
    """tools/test.py --compile on the first 64 held-out digits in one batch (one compilation)."""
    _, checkpoint = trained_demo
    data = digits_test_options(digits_root, 'test_dataloader.dataset.indices=64', 'test_dataloader.batch_size=64')
    top1 = {}
    for flags in ([], ['--compile']):
        run = run_tool('tools/test.py', DEMO_NAME, checkpoint, *flags, '--work-dir', str(tmp_path / str(len(top1))),
                       '--cfg-options', *data)
        assert ('Model has been "compiled"' in run.stdout + run.stderr) == bool(flags)
        top1[bool(flags)] = float(re.findall(r'accuracy/top1: ([\d.]+)', run.stdout)[-1])
    assert 50 < top1[False] <= 100 and top1[True] == top1[False]
