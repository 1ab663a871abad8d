"""Export every config of the model index with tools/deployment/export.py and record the results.

    python tools/deployment/export_check.py [--pattern NAME_PREFIX] [--format onnx|pt2]
        [--out tools/deployment/export_check.json] [--work-dir work_dirs/export_check] [--redo | --retry-failed]

Each model is exported with ``--dynamic`` (initial weights: exporting does not depend on them) and
verified by the tool; Panoptic FPN models, whose full graph is not exportable (RoI operations,
NMS), are exported ``--backbone-only``. Every export runs in its own process; the JSON (one entry
per model: status, accepted sizes, verified sizes with their max |difference|, seconds) is
rewritten after each model, so an interrupted run resumes where it stopped (``--redo`` exports
again the models already recorded).
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
    return parser.parse_args(argv)


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
