"""Export every config of the model index with tools/deployment/export.py and record the results.

    python tools/deployment/export_check.py [--pattern NAME_PREFIX] [--format onnx|pt2]
        [--out tools/deployment/export_check.json] [--work-dir work_dirs/export_check] [--redo | --retry-failed]
    python tools/deployment/export_check.py --readme [--check]

Each model is exported with ``--dynamic`` (initial weights: exporting does not depend on them) and
verified by the tool; Panoptic FPN models, whose full graph is not exportable (RoI operations,
NMS), are exported ``--backbone-only``. Every export runs in its own process; the JSON (one entry
per model: status, accepted sizes, verified sizes with their max |difference|, seconds) is
rewritten after each model, so an interrupted run resumes where it stopped (``--redo`` exports
again the models already recorded).

``--readme`` writes the results into README.md between ``<!-- export-check:start -->`` and
``<!-- export-check:end -->`` (every model of the index: verified, failed with its reason, or not
checked yet), with the onnxruntime vs PyTorch table of ``tools/deployment/onnxruntime_speed.json``
(``make export-speed``: benchmark.py ``--backend onnxruntime``); ``--check`` only says whether
README.md holds what the JSONs give (exit 1 if not).
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Export every model of the index and record the results')
    parser.add_argument('--pattern', help='only names starting with this (shell wildcard, as list_models)')
    parser.add_argument('--format', choices=['onnx', 'pt2'], default='onnx')
    parser.add_argument('--out', default=osp.join(ROOT, 'tools', 'deployment', 'export_check.json'))
    parser.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs', 'export_check'),
                        help='where the exported files go (deleted after each check)')
    parser.add_argument('--redo', action='store_true', help='export the models already in --out again')
    parser.add_argument('--retry-failed', action='store_true', help='export the models recorded as failed again')
    parser.add_argument('--timeout', type=int, default=3600, help='seconds per model')
    parser.add_argument('--readme', action='store_true', help='write the results of --out into README.md')
    parser.add_argument('--check', action='store_true', help='with --readme: exit 1 if README.md is stale')
    parser.add_argument('--speed-json', default=SPEED_JSON,
                        help='with --readme: benchmark.py --backend onnxruntime JSON (default: the committed one)')
    return parser.parse_args(argv)


START, END = '<!-- export-check:start -->', '<!-- export-check:end -->'


def _sizes(allowed: dict) -> str:
    """``'H >= 32, W >= 64'`` (with ``, step N`` where the sizes are not every integer)."""
    parts = []
    for axis, letter in (('height', 'H'), ('width', 'W')):
        rule = allowed[axis]
        text = f'{letter} >= {rule["min"]}'
        if rule.get('step', 1) != 1:
            text += f' (step {rule["step"]})'
        parts.append(text)
    return ', '.join(parts)


def render(results: dict, names) -> str:
    """The README's export results: a summary line per task, then a row per model of the index."""
    from vitzoo.apis.model import ModelHub
    lines, tasks = [], {}
    for name in names:
        entry = results.get(name)
        task = entry['task'] if entry else ModelHub.get(name).task
        counts = tasks.setdefault(task, dict(ok=0, failed=0, unchecked=0, diff=0.))
        if entry is None:
            counts['unchecked'] += 1
        elif entry['status'] == 'ok':
            counts['ok'] += 1
            counts['diff'] = max(counts['diff'], entry['max_abs_diff'])
        else:
            counts['failed'] += 1
    for task, counts in tasks.items():
        line = f'- {task}: {counts["ok"]} of {sum(counts[k] for k in ("ok", "failed", "unchecked"))} verified'
        if counts['ok']:
            line += f' (largest max \\|diff\\| {counts["diff"]:.1e})'
        if counts['failed']:
            line += f', {counts["failed"]} failed'
        if counts['unchecked']:
            line += f', {counts["unchecked"]} not checked yet'
        lines.append(line)
    lines += ['', '| model | exported | result | max \\|diff\\| (sizes verified) | sizes the file accepts |',
              '|---|---|---|---|---|']
    for name in names:
        entry = results.get(name)
        if entry is None:
            lines.append(f'| `{name}` | - | not checked yet | - | - |')
        elif entry['status'] == 'ok':
            verified = ', '.join(f'{v["height"]}x{v["width"]}' for v in entry['verification'])
            exported = 'backbone' if entry['exported'].startswith('backbone') else 'model'
            lines.append(f'| `{name}` | {exported} | ok | {entry["max_abs_diff"]:.1e} ({verified}) | '
                         f'{_sizes(entry["allowed"])} |')
        else:
            reason = entry['log'].strip().splitlines()[-1][:120].replace('|', '/') if entry['log'].strip() else '?'
            lines.append(f'| `{name}` | - | failed: {reason} | - | - |')
    return '\n'.join(lines) + '\n'


#: benchmark.py --backend onnxruntime --json output committed for the README (make export-speed)
SPEED_JSON = osp.join(ROOT, 'tools', 'deployment', 'onnxruntime_speed.json')


def render_speed(reports: list) -> str:
    """The README's onnxruntime vs PyTorch eager table from benchmark.py's JSON reports."""
    first = reports[0]
    machine = first.get('machine', {})
    lines = [f'onnxruntime (CPU provider) vs PyTorch eager, inference, batch {first["batch_size"]}, '
             f'{first["shape"][0]}x{first["shape"][1]}, fp32, {machine.get("torch_threads", "?")} threads '
             f'(median of {first.get("rounds", "?")} rounds, the two alternating in one process); measured '
             f'{first.get("date", "?")} on {machine.get("cpu", "?")} ({machine.get("cpu_count", "?")} cores), torch '
             f'{machine.get("torch", "?")}. Command: `{first.get("command", "?")}`', '',
             '| model | PyTorch eager img/s | onnxruntime img/s | onnxruntime / PyTorch | max \\|diff\\| |',
             '|---|---:|---:|---:|---:|']
    for report in reports:
        row = report['results'][0]
        torch_ips, ort_ips = row['vitzoo']['img_per_s'], row['onnxruntime']['img_per_s']
        lines.append(f'| `{report["model"]}` | {torch_ips:.2f} | {ort_ips:.2f} | {ort_ips / torch_ips:.2f}x | '
                     f'{report["max_output_difference"]:.1e} |')
    return '\n'.join(lines) + '\n'


def update_readme(args) -> int:
    import vitzoo
    from vitzoo.utils.readme_block import write_generated_block
    with open(args.out) as f:
        results = json.load(f)
    speed = ''
    if osp.exists(args.speed_json):
        with open(args.speed_json) as f:
            speed = '\n' + render_speed(json.load(f))
    return write_generated_block(
        osp.join(ROOT, 'README.md'), START, END,
        'tools/deployment/export_check.py --readme from tools/deployment/export_check.json and onnxruntime_speed.json',
        render(results, vitzoo.list_models()) + speed, args.check, what='export results',
        command='python tools/deployment/export_check.py --readme', source='tools/deployment/export_check.json')


def check(name: str, args) -> dict:
    from vitzoo.apis.model import ModelHub
    task = ModelHub.get(name).task
    out = osp.join(args.work_dir, f'{name}.{args.format}')
    report = osp.join(args.work_dir, f'{name}.json')
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'deployment', 'export.py'), name, '-o', out, '--dynamic',
           '--overwrite', '--json', report]
    entry = dict(task=task, format=args.format, exported='full model')
    if task == 'Panoptic Segmentation':
        # Exported and verified at 480x640 (the graph is dynamic): at 800x1333 onnxruntime's attention
        # holds the whole N x N matrix, 7.5 GB per image and head for PiT-B's global attention.
        cmd += ['--backbone-only', '--shape', '480', '640']
        entry['exported'] = 'backbone only (RoI heads and NMS are not exportable)'
    start = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, cwd=ROOT)
        returncode, tail = proc.returncode, (proc.stdout + proc.stderr)[-2000:]
    except subprocess.TimeoutExpired:
        returncode, tail = None, f'timed out after {args.timeout} s'
    entry['seconds'] = round(time.time() - start, 1)
    if returncode == 0:
        with open(report) as f:
            result = json.load(f)
        entry.update(status='ok', allowed=result['allowed'], verification=result['verification'],
                     max_abs_diff=max(v['max_abs_diff'] for v in result['verification']))
    else:
        entry.update(status='failed', log=tail)
    for path in (out, report):
        if osp.exists(path):
            os.remove(path)
    return entry


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.readme:
        return update_readme(args)
    import vitzoo
    from vitzoo.utils.atomic import write_atomically
    os.makedirs(args.work_dir, exist_ok=True)
    results = {}
    if osp.exists(args.out):
        with open(args.out) as f:
            results = json.load(f)
    for name in vitzoo.list_models(args.pattern):
        retry = args.retry_failed and results.get(name, {}).get('status') != 'ok'
        if name in results and results[name].get('format') == args.format and not (args.redo or retry):
            continue
        print(f'=== {name}', flush=True)
        results[name] = check(name, args)
        entry = results[name]
        print(f'{entry["status"]} in {entry["seconds"]} s' +
              (f', max |diff| {entry["max_abs_diff"]:.2e}' if entry['status'] == 'ok' else f'\n{entry["log"]}'),
              flush=True)
        write_atomically(args.out, json.dumps(dict(sorted(results.items())), indent=1) + '\n')
    failed = sorted(n for n, e in results.items() if e['status'] != 'ok')
    print(f'{len(results) - len(failed)} of {len(results)} exported and verified' +
          (f'; failed: {", ".join(failed)}' if failed else ''))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
