"""README.md's Speed section, rendered from the committed benchmark results.

    python tools/analysis_tools/speed_table.py --merge MAIN.json [SWEEP.json ...]  # write speed.json
    python tools/analysis_tools/speed_table.py            # rewrite the Speed section of README.md
    python tools/analysis_tools/speed_table.py --check    # exit 1 if README.md is not up to date

``--merge`` reads the ``--json`` files of ``benchmark.py`` runs and writes them into
``tools/analysis_tools/speed.json``, each report filed as ``main`` (the classifiers against timm),
``dense`` (segmentors and detectors, timed alone), ``sweep`` (a ``--sweep-shape`` run) or
``compile`` (a ``--compile`` run); the kinds the files hold replace those of the existing JSON, the
others are kept. The classifier table is split by ISA setting (the ISA caps of the environment the
run had, e.g. ``ONEDNN_MAX_CPU_ISA=AVX2``), one table each. The section goes between
the ``<!-- speed-table:start -->`` and ``<!-- speed-table:end -->`` markers; every number in it
comes from speed.json (``make bench`` reproduces both).
"""
import argparse
import json
import os.path as osp
import statistics
import sys
from typing import Dict, List, Optional

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
JSON_PATH = osp.join(ROOT, 'tools', 'analysis_tools', 'speed.json')
README_PATH = osp.join(ROOT, 'README.md')
START, END = '<!-- speed-table:start -->', '<!-- speed-table:end -->'
KINDS = ('main', 'dense', 'sweep', 'compile')
# the goals the tables can show (issues 12 and 18): vitzoo >= timm; with ATen's kernels alone Twins (PCPVT,
# SVT) >= 1.10x; the kernel choice never below ATen (within the spread of the rounds)
GOAL_RATIO, GOAL_WITH_CP = 1.00, 0.6
TWINS_ATEN_GOAL = 1.10
ISA_VARIABLES = ('ONEDNN_MAX_CPU_ISA', 'DNNL_MAX_CPU_ISA', 'MKL_ENABLE_INSTRUCTIONS', 'MKL_DEBUG_CPU_TYPE')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='README.md Speed section from speed.json')
    parser.add_argument('--merge', nargs='+', metavar='RUN.json', help='benchmark.py --json files to merge')
    parser.add_argument('--json', default=JSON_PATH, help='the merged results (default: %(default)s)')
    parser.add_argument('--readme', default=README_PATH, help='the README to write or check')
    parser.add_argument('--check', action='store_true', help='exit 1 if the README section is stale')
    return parser.parse_args(argv)


def kind_of(report: dict) -> str:
    """``sweep``, ``compile``, ``dense`` or ``main``: which table a benchmark report belongs to."""
    if report.get('sweep'):
        return 'sweep'
    if any('vitzoo_compiled' in row for row in report['results']):
        return 'compile'
    return 'main' if report.get('task', 'classification') == 'classification' else 'dense'


def merge(paths: List[str], existing: Optional[Dict[str, List[dict]]] = None) -> Dict[str, List[dict]]:
    """The reports of ``paths`` by kind; kinds they do not hold come from ``existing``."""
    merged = {kind: [] for kind in KINDS}
    for path in paths:
        with open(path) as f:
            for report in json.load(f):
                merged[kind_of(report)].append(report)
    for kind in KINDS:
        if not merged[kind] and existing:
            merged[kind] = existing.get(kind, [])
    return merged


def isa_setting(report: dict) -> str:
    """The ISA caps a run had (``default`` without any): what decides which kernels MKL and oneDNN run."""
    signature = report['machine'].get('cpu_signature', {})
    caps = [f'{v}={signature[v]}' for v in ISA_VARIABLES if v in signature]
    return ' '.join(caps) or 'default'


def _processor(report: dict) -> str:
    """Processor model and its vector ISA flags."""
    m = report['machine']
    signature = m.get('cpu_signature', {})
    flags = signature.get('isa', '')
    avx512 = 'AVX-512' if 'avx512f' in flags.split() else 'no AVX-512'
    details = f' (family {signature["family"]} model {signature["model"]}; {avx512}; flags: {flags})' \
        if 'family' in signature else ''
    return f'{m["cpu"]}{details}'


def _row(report: dict, mode: str) -> Optional[dict]:
    return next((r for r in report['results'] if r['mode'] == mode), None)


def _ratio(value: Optional[float]) -> str:
    return '-' if value is None else f'{value:.2f}'


def _speed(row: Optional[dict], key: str = 'vitzoo') -> str:
    """``img/s, GFLOP/s (% of the matmul peak)`` of one model in one row."""
    if row is None or key not in row:
        return '-'
    entry = row[key]
    text = f'{entry["img_per_s"]:.{1 if entry["img_per_s"] >= 1 else 3}f}'  # 3 decimals for the slow dense rows
    if 'gflop_per_s' in entry:
        text += f' ({entry["gflop_per_s"]:.1f}'
        text += f', {entry["peak_fraction"]:.0%})' if 'peak_fraction' in entry else ')'
    return text


def _mib(value: Optional[float]) -> str:
    return '-' if value is None else f'{value / 2**20:.0f}'


def _run_line(reports: List[dict]) -> str:
    """When, where and how a table's reports were measured (every distinct command)."""
    first = reports[0]
    m = first['machine']
    peak = first['matmul_peak']
    timm = f', timm {m["timm"]}' if 'timm' in m else ''
    kernels = ', '.join(f'`{k}` {v:.1f}' for k, v in peak.get('gflop_per_s_by_kernel', {}).items())
    kernel = f'the faster of {kernels}' if kernels else '`torch.mm`'
    if 'linear_mode' in first:
        linear = f'; vitzoo linear mode `{first["linear_mode"]}`, ISA setting: {isa_setting(first)}'
    else:  # runs before the kernel choice: oneDNN everywhere or ATen everywhere
        linear = {True: '; vitzoo linear layers on oneDNN (before the measured kernel choice)',
                  False: '; vitzoo linear layers on ATen (VITZOO_ONEDNN_LINEAR=0)'}.get(first.get('onednn_linear'), '')
    dates = sorted({r['date'] for r in reports})
    commands = list(dict.fromkeys(r['command'] for r in reports))
    return (f'{" to ".join(dict.fromkeys([dates[0], dates[-1]]))}; {_processor(first)}, {m["cpu_count"]} cores '
            f'visible, {first["device"]}, {m["torch_threads"]} torch threads, torch {m["torch"]}{timm}; fp32 matmul '
            f'peak {peak["gflop_per_s"]:.1f} GFLOP/s ({peak["n"]}x{peak["n"]}, {kernel}, median of {peak["repeats"]}, '
            f'same process){linear}. '
            f'Command{"s" if len(commands) > 1 else ""}: ' + '; '.join(f'`{c}`' for c in commands))


def _round_ratios(row: dict, a: str, b: str) -> List[float]:
    """``a / b`` img/s in each round (the models alternate within a round)."""
    return [x / y for x, y in zip(row[a]['img_per_s_rounds'], row[b]['img_per_s_rounds'])]


def _paired_ratio(row: dict, a: str, b: str) -> float:
    """benchmark.py's ratio: the median of the rounds' ratios."""
    return statistics.median(_round_ratios(row, a, b))


def _paired(row: Optional[dict], a: str, b: str) -> str:
    """``a / b`` img/s: the median of the rounds' ratios, and the lowest-highest in parentheses."""
    if row is None or a not in row or b not in row:
        return '-'
    rounds = _round_ratios(row, a, b)
    return f'{_paired_ratio(row, a, b):.2f} ({min(rounds):.2f}-{max(rounds):.2f})'


def _onednn_share(row: Optional[dict]) -> str:
    """Linear products that ran on oneDNN in the timed steps, of all vitzoo ran (counted from the calls)."""
    counts = (row or {}).get('vitzoo', {}).get('linear_kernels')
    if not counts:
        return '-'
    return f'{sum(c for k, c in counts.items() if not k.endswith("/aten")) / sum(counts.values()):.0%}'


def render_main(reports: List[dict]) -> List[str]:
    """One classifier table per ISA setting."""
    lines = []
    for setting in dict.fromkeys(isa_setting(r) for r in reports):
        group = [r for r in reports if isa_setting(r) == setting]
        first = group[0]
        lines += [f'**Classifiers, ISA setting: {setting}**: vitzoo vs timm, batch {first["batch_size"]}, '
                  f'{first["shape"][0]}x{first["shape"][1]}, fp32 eager ({first["warmup"]} warm-up, median of '
                  f'{first["rounds"]} rounds x {first["iters"]} iterations, vitzoo with its kernel choice, vitzoo on '
                  f'ATen and timm alternating). Measured {_run_line(group)}', '',
                  '| model | infer img/s | infer vitzoo / timm | infer on ATen / timm | infer choice / ATen '
                  '| train img/s | train vitzoo / timm | train on ATen / timm | train choice / ATen '
                  '| on oneDNN (infer, train) | with_cp MiB | with_cp ratio |',
                  '|---|---|---|---|---|---|---|---|---|---|---|---|']
        for report in group:
            infer, train = _row(report, 'infer'), _row(report, 'train')
            cp = (train or {}).get('with_cp') or {}
            memory = (f'{_mib(cp["peak_mem_bytes_with"])} / {_mib(cp["peak_mem_bytes_without"])}'
                      if 'ratio' in cp else '-')
            lines.append(f'| `{report["model"]}` | {_speed(infer)} | {_paired(infer, "vitzoo", "timm")} | '
                         f'{_paired(infer, "vitzoo_aten", "timm")} | {_paired(infer, "vitzoo", "vitzoo_aten")} | '
                         f'{_speed(train)} | {_paired(train, "vitzoo", "timm")} | '
                         f'{_paired(train, "vitzoo_aten", "timm")} | {_paired(train, "vitzoo", "vitzoo_aten")} | '
                         f'{_onednn_share(infer)}, {_onednn_share(train)} | {memory} | {_ratio(cp.get("ratio"))} |')
        lines.append('')
    lines += ['img/s of vitzoo with its kernel choice (GFLOP/s, % of the matmul peak). Ratios: img/s over img/s, '
              'the median of the ratios within a round (the models alternate in each) and, in parentheses, the lowest '
              'and highest of them (> 1: the first is faster). *vitzoo / timm*: what a user gets; *on ATen / timm*: '
              'the model code alone, with the kernels timm runs (`VITZOO_ONEDNN_LINEAR=0`); *choice / ATen*: what '
              'the measured kernel choice adds. '
              '*on oneDNN*: the share of vitzoo\'s linear products that ran on oneDNN in the timed steps, counted '
              'from the calls. with_cp: peak memory of a training step (RSS growth, MiB) with / without the '
              'backbone\'s `with_cp=True`.']
    return lines


def render_dense(reports: List[dict]) -> List[str]:
    lines = [f'**Dense models** (timed alone: no timm counterpart), fp32 eager; inference is the toolbox\'s '
             f'`predict` with post-processing, training a `loss` step against random targets. Measured '
             f'{_run_line(reports)}', '',
             'img/s (GFLOP/s, % of the matmul peak) and peak memory (RSS growth, MiB).', '',
             '| model | input | batch | inference | inference MiB | training step | training MiB |',
             '|---|---|---|---|---|---|---|']
    for report in reports:
        infer, train = _row(report, 'infer'), _row(report, 'train')
        lines.append(f'| `{report["model"]}` | {report["shape"][0]}x{report["shape"][1]} | {report["batch_size"]} | '
                     f'{_speed(infer)} | {_mib(infer["vitzoo"]["peak_mem_bytes"]) if infer else "-"} | '
                     f'{_speed(train)} | {_mib(train["vitzoo"]["peak_mem_bytes"]) if train else "-"} |')
    return lines


def render_compile(reports: List[dict]) -> List[str]:
    lines = [f'**torch.compile** (`--compile`: default inductor backend, not fullgraph). Measured {_run_line(reports)}',
             '', 'img/s (GFLOP/s, % of peak); compile = the first call of the mode (compilation and one step).', '',
             '| model | mode | eager vitzoo / timm | compiled vitzoo | compiled timm | compiled ratio '
             '| compiled / eager vitzoo | compile s (vitzoo / timm) |', '|---|---|---|---|---|---|---|---|']
    for report in reports:
        for row in report['results']:
            seconds = ' / '.join(f'{row[k]["compile_s"]:.0f}' for k in ('vitzoo_compiled', 'timm_compiled') if k in row)
            lines.append(f'| `{report["model"]}` | {row["mode"]} | {_ratio(row.get("ratio"))} | '
                         f'{_speed(row, "vitzoo_compiled")} | {_speed(row, "timm_compiled")} | '
                         f'{_ratio(row.get("compiled_ratio"))} | {_ratio(row.get("compile_speedup"))} | {seconds} |')
    return lines


def render_sweep(reports: List[dict], plot: str) -> List[str]:
    first = reports[0]
    mode = first['results'][0]['mode']
    sizes = sorted({r['shape'][0] for r in reports})
    models = list(dict.fromkeys(r['model'] for r in reports))
    by = {(r['model'], r['shape'][0]): _row(r, mode) for r in reports}
    lines = [f'**Cost vs input size** ({mode}, batch {first["batch_size"]}, SxS, fp32 eager; `--sweep-shape`). '
             f'Measured {_run_line(reports)}', '',
             f'img/s (GFLOP/s, % of peak) and peak memory (RSS growth, MiB) at each size S; plot: `{plot}`.', '',
             '| model | ' + ' | '.join(f'{s}: img/s | {s}: MiB' for s in sizes) + ' |',
             '|---|' + '---|---|' * len(sizes)]
    for model in models:
        cells = []
        for size in sizes:
            row = by.get((model, size))
            cells += [_speed(row), _mib(row['vitzoo']['peak_mem_bytes']) if row else '-']
        lines.append(f'| `{model}` | ' + ' | '.join(cells) + ' |')
    lines += ['', f'![img/s and memory against input size]({plot})']
    return lines


def render_goals(merged: Dict[str, List[dict]]) -> List[str]:
    """How many rows meet the ratio goals, per ISA setting (counted from the tables above)."""
    lines = []
    compared = [r for r in merged['main'] if 'timm' in (_row(r, 'infer') or {})]
    for setting in dict.fromkeys(isa_setting(r) for r in compared):
        group = [r for r in compared if isa_setting(r) == setting]
        prefix = f'{setting}: ' if len({isa_setting(r) for r in compared}) > 1 else ''
        for mode, label in (('infer', 'inference'), ('train', 'training step')):
            rows = [(r['model'], _row(r, mode)) for r in group if _row(r, mode) and 'timm' in _row(r, mode)]
            checks = [(f'vitzoo >= {GOAL_RATIO:.2f}x timm', rows, 'vitzoo', 'timm', GOAL_RATIO)]
            if all('vitzoo_aten' in row for _, row in rows):
                twins = [(m, row) for m, row in rows if m.startswith('twins-')]
                checks += [(f'vitzoo on ATen >= {GOAL_RATIO:.2f}x timm', rows, 'vitzoo_aten', 'timm', GOAL_RATIO),
                           (f'Twins (PCPVT, SVT) on ATen >= {TWINS_ATEN_GOAL:.2f}x timm', twins, 'vitzoo_aten', 'timm',
                            TWINS_ATEN_GOAL)]
            for what, subset, a, b, goal in checks:
                below = [f'`{m}` {_paired_ratio(row, a, b):.2f}' for m, row in subset
                         if _paired_ratio(row, a, b) < goal]
                if subset:
                    lines.append(f'- {prefix}{label}, {what}: {len(subset) - len(below)} of {len(subset)}'
                                 + (f' (below: {", ".join(below)})' if below else ''))
            if all('vitzoo_aten' in row for _, row in rows) and rows:
                # never below ATen: the median ratio >= 1, or a round where the choice was at least as fast
                below = [f'`{m}` {_paired_ratio(row, "vitzoo", "vitzoo_aten"):.2f}'
                         for m, row in rows if _paired_ratio(row, 'vitzoo', 'vitzoo_aten') < 1]
                outside = [m for m, row in rows if max(_round_ratios(row, 'vitzoo', 'vitzoo_aten')) < 1]
                lines.append(f'- {prefix}{label}, kernel choice >= ATen: {len(rows) - len(below)} of {len(rows)} by '
                             f'the median ratio' + (f' (below: {", ".join(below)})' if below else '')
                             + f'; below in every round: {len(outside)}' + (f' ({", ".join(outside)})'
                                                                            if outside else ''))
    cps = [(r['model'], (_row(r, 'train') or {}).get('with_cp') or {}) for r in merged['main']]
    cps = [(m, cp['ratio']) for m, cp in cps if 'ratio' in cp]
    if cps:
        above = [f'`{m}` {ratio:.2f}' for m, ratio in cps if ratio > GOAL_WITH_CP]
        lines.append(f'- with_cp peak training memory <= {GOAL_WITH_CP}x of without: {len(cps) - len(above)} of '
                     f'{len(cps)}' + (f' (above: {", ".join(above)})' if above else ''))
    compiled = [(r['model'], row) for r in merged['compile'] for row in r['results'] if 'compiled_ratio' in row]
    if compiled:
        below = [f'`{m}` {row["mode"]} {row["compiled_ratio"]:.2f}' for m, row in compiled
                 if row['compiled_ratio'] < GOAL_RATIO]
        lines.append(f'- compiled vitzoo >= {GOAL_RATIO:.2f}x compiled timm: {len(compiled) - len(below)} of '
                     f'{len(compiled)} (model, mode)' + (f' (below: {", ".join(below)})' if below else ''))
    return lines


def render(merged: Dict[str, List[dict]], plot: str = 'docs/speed_sweep.png') -> str:
    parts = []
    if merged.get('main'):
        parts.append(render_main(merged['main']))
    if merged.get('dense'):
        parts.append(render_dense(merged['dense']))
    if merged.get('compile'):
        parts.append(render_compile(merged['compile']))
    if merged.get('sweep'):
        parts.append(render_sweep(merged['sweep'], plot))
    goals = render_goals(merged)
    if goals:
        parts.append(['The ratio goals (issues 12 and 18), counted from the tables above:', ''] + goals)
    return '\n\n'.join('\n'.join(p) for p in parts) + '\n'


def update_readme(json_path: str, readme_path: str, check: bool) -> int:
    from vitzoo.utils.readme_block import write_generated_block
    with open(json_path) as f:
        merged = json.load(f)
    return write_generated_block(
        readme_path, START, END,
        'tools/analysis_tools/speed_table.py from tools/analysis_tools/speed.json (make bench)',
        render(merged), check, what='Speed section', command='python tools/analysis_tools/speed_table.py',
        source='tools/analysis_tools/speed.json')


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.merge:
        existing = None
        if osp.exists(args.json):
            with open(args.json) as f:
                existing = json.load(f)
        merged = merge(args.merge, existing)
        with open(args.json, 'w') as f:
            json.dump(merged, f, indent=1)
            f.write('\n')
        print(f'wrote {args.json}: ' + ', '.join(f'{len(v)} {k}' for k, v in merged.items()))
        return 0
    return update_readme(args.json, args.readme, args.check)


if __name__ == '__main__':
    sys.exit(main())
