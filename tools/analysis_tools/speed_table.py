"""README.md's Speed section, rendered from the committed benchmark results.

    python tools/analysis_tools/speed_table.py --merge MAIN.json [SWEEP.json ...]  # write speed.json
    python tools/analysis_tools/speed_table.py            # rewrite the Speed section of README.md
    python tools/analysis_tools/speed_table.py --check    # exit 1 if README.md is not up to date

``--merge`` reads the ``--json`` files of ``benchmark.py`` runs and writes them into
``tools/analysis_tools/speed.json``, each report filed as ``main`` (the classifiers against timm),
``dense`` (segmentors and detectors, timed alone), ``sweep`` (a ``--sweep-shape`` run) or
``compile`` (a ``--compile`` run). The section goes between
the ``<!-- speed-table:start -->`` and ``<!-- speed-table:end -->`` markers; every number in it
comes from speed.json (``make bench`` reproduces both).
"""
import argparse
import json
import os.path as osp
import sys
from typing import Dict, List, Optional

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
JSON_PATH = osp.join(ROOT, 'tools', 'analysis_tools', 'speed.json')
README_PATH = osp.join(ROOT, 'README.md')
START, END = '<!-- speed-table:start -->', '<!-- speed-table:end -->'
KINDS = ('main', 'dense', 'sweep', 'compile')
# the goals of issue 12 that the table can show; Twins (PCPVT, SVT) has higher ones
GOAL_RATIO, GOAL_WITH_CP = 1.00, 0.6
TWINS_GOALS = {'infer': 1.15, 'train': 1.10}


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


def merge(paths: List[str]) -> Dict[str, List[dict]]:
    merged = {kind: [] for kind in KINDS}
    for path in paths:
        with open(path) as f:
            for report in json.load(f):
                merged[kind_of(report)].append(report)
    return merged


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
    onednn = {True: '; vitzoo linear layers on oneDNN',
              False: '; vitzoo linear layers on ATen (VITZOO_ONEDNN_LINEAR=0)'}
    dates = sorted({r['date'] for r in reports})
    commands = list(dict.fromkeys(r['command'] for r in reports))
    return (f'{" to ".join(dict.fromkeys([dates[0], dates[-1]]))}; {m["cpu"]} ({m["cpu_count"]} cores visible), '
            f'{first["device"]}, {m["torch_threads"]} torch threads, torch {m["torch"]}{timm}; fp32 matmul peak '
            f'{peak["gflop_per_s"]:.1f} GFLOP/s ({peak["n"]}x{peak["n"]}, {kernel}, median of {peak["repeats"]}, '
            f'same process){onednn.get(first.get("onednn_linear"), "")}. '
            f'Command{"s" if len(commands) > 1 else ""}: ' + '; '.join(f'`{c}`' for c in commands))


def render_main(reports: List[dict]) -> List[str]:
    first = reports[0]
    lines = [f'**vitzoo vs timm**, batch {first["batch_size"]}, {first["shape"][0]}x{first["shape"][1]}, fp32 eager '
             f'({first["warmup"]} warm-up, median of {first["rounds"]} rounds x {first["iters"]} iterations, the two '
             f'models alternating). Measured {_run_line(reports)}', '',
             'img/s (GFLOP/s, % of the matmul peak); ratio = vitzoo / timm img/s (> 1: vitzoo faster). '
             'with_cp: peak memory of a training step (RSS growth, MiB) with / without the backbone\'s '
             '`with_cp=True`.', '',
             '| model | inference vitzoo | inference timm | ratio | training vitzoo | training timm | ratio '
             '| with_cp memory (MiB) | with_cp ratio |',
             '|---|---|---|---|---|---|---|---|---|']
    for report in reports:
        infer, train = _row(report, 'infer'), _row(report, 'train')
        cp = (train or {}).get('with_cp') or {}
        memory = (f'{_mib(cp["peak_mem_bytes_with"])} / {_mib(cp["peak_mem_bytes_without"])}'
                  if 'ratio' in cp else '-')
        lines.append(f'| `{report["model"]}` | {_speed(infer)} | {_speed(infer, "timm")} | '
                     f'{_ratio((infer or {}).get("ratio"))} | {_speed(train)} | {_speed(train, "timm")} | '
                     f'{_ratio((train or {}).get("ratio"))} | {memory} | {_ratio(cp.get("ratio"))} |')
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
    """How many rows meet issue 12's ratio goals (counted from the tables above)."""
    lines = []
    compared = [r for r in merged['main'] if 'timm' in (_row(r, 'infer') or {})]
    for mode, label in (('infer', 'inference'), ('train', 'training step')):
        rows = [(r['model'], _row(r, mode)) for r in compared if _row(r, mode) and 'ratio' in _row(r, mode)]
        slower = [f'`{m}` {row["ratio"]:.2f}' for m, row in rows if row['ratio'] < GOAL_RATIO]
        if rows:
            lines.append(f'- {label} >= {GOAL_RATIO:.2f}x timm: {len(rows) - len(slower)} of {len(rows)}'
                         + (f' (below: {", ".join(slower)})' if slower else ''))
        twins = [(m, row) for m, row in rows if m.startswith('twins-')]
        below = [f'`{m}` {row["ratio"]:.2f}' for m, row in twins if row['ratio'] < TWINS_GOALS[mode]]
        if twins:
            lines.append(f'- Twins (PCPVT, SVT) {label} >= {TWINS_GOALS[mode]:.2f}x timm: {len(twins) - len(below)} '
                         f'of {len(twins)}' + (f' (below: {", ".join(below)})' if below else ''))
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
        parts.append(['Issue 12\'s ratio goals on this run:', ''] + goals)
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
        merged = merge(args.merge)
        with open(args.json, 'w') as f:
            json.dump(merged, f, indent=1)
            f.write('\n')
        print(f'wrote {args.json}: ' + ', '.join(f'{len(v)} {k}' for k, v in merged.items()))
        return 0
    return update_readme(args.json, args.readme, args.check)


if __name__ == '__main__':
    sys.exit(main())
