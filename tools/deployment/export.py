"""Export a vitzoo model to ONNX or a torch.export program (.pt2) and verify it against PyTorch.

    python tools/deployment/export.py MODEL_OR_CONFIG [CHECKPOINT] [--format {onnx,pt2}] [--shape H W]
        [--dynamic] [--opset N] [--output {logits,seg_logits,seg_map,features}] [--backbone-only]
        [--no-verify] [--tolerance 1e-4] [--overwrite] -o OUT

MODEL_OR_CONFIG is a name of ``vitzoo.list_models()`` or a config file; CHECKPOINT a path or an
http(s) URL (loaded as ``vitzoo.get_model(..., pretrained=CHECKPOINT)``; without it the model keeps
its initial weights, which is enough to check that it exports).

Preprocessing contract of the exported file (printed by the tool, stored in the file's metadata):
one input ``image`` of shape (N, 3, H, W), float32, NCHW, RGB, pixel values in [0, 255] resized /
cropped as the config's test pipeline does; the config's normalisation ``(x - mean) / std`` is in
the graph. Outputs: classifier logits (N, num_classes); SegFormer per-pixel logits
(N, num_classes, H, W) at the input size, or their argmax (``--output seg_map``, int64); a backbone's
NCHW maps (``--backbone-only``, the only export of Panoptic FPN models: RoI heads and NMS are not
exported).

``--dynamic`` makes batch, height and width symbolic; the tool prints the sizes the file accepts
(sizes need not be multiples of 32). Verification (on unless ``--no-verify``) runs the written file
with onnxruntime's CPU provider (or loads the .pt2 program) next to PyTorch on random images at the
export size, a non-square size and a size that is not a multiple of 32 (dynamic exports; the fixed
size otherwise), prints the maximum absolute difference per size and exits with status 1 when one
exceeds ``--tolerance``, unless the export is as exact as PyTorch itself there: where float32
PyTorch is that far from the exact result (deep models with large activations, such as untrained
DaViT-S/B at 800x1333), both are compared with a float64 PyTorch forward and the export passes
when its error is at most twice float32 PyTorch's (both errors are printed and saved).
"""
import argparse
import json
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Export a vitzoo model to ONNX or .pt2 and verify it')
    parser.add_argument('model', help='model name of the index or config file')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint path or URL (default: initial weights)')
    parser.add_argument('-o', '--out', required=True, help='output file (.onnx or .pt2)')
    parser.add_argument('--format', choices=['onnx', 'pt2'], help='default: from the suffix of --out')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'), help='export size (default: the test size)')
    parser.add_argument('--dynamic', action='store_true', help='dynamic batch, height and width')
    parser.add_argument('--opset', type=int, help='ONNX opset (default: the exporter\'s)')
    parser.add_argument('--output', choices=['logits', 'seg_logits', 'seg_map', 'features'],
                        help='what the graph returns (default: logits / seg_logits)')
    parser.add_argument('--backbone-only', action='store_true', help='export the backbone\'s feature maps')
    parser.add_argument('--no-verify', dest='verify', action='store_false', help='skip the comparison with PyTorch')
    parser.add_argument('--tolerance', type=float, default=1e-4, help='largest accepted |difference| (fp32)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing output file')
    parser.add_argument('--json', help='also write the export report (sizes, differences) to this JSON file')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import vitzoo
    from vitzoo.deploy import ExportVerificationError, UnsupportedExportError, export_model
    try:
        model = vitzoo.get_model(args.model, pretrained=args.checkpoint or False)
        result = export_model(model, args.out, fmt=args.format, shape=args.shape, dynamic=args.dynamic,
                              opset=args.opset, output=args.output, backbone_only=args.backbone_only,
                              verify=args.verify, tolerance=args.tolerance, overwrite=args.overwrite)
    except (UnsupportedExportError, ExportVerificationError, FileExistsError, FileNotFoundError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result.to_dict(), f, indent=1)
    if result.verification:
        beyond = [v for v in result.verification if 'float64_error_exported' in v]
        print(f'verified: max |diff| {result.max_abs_diff:.3g}' + (
            f' (above {args.tolerance:g} at {len(beyond)} size(s), where the export is as exact as float32 PyTorch)'
            if beyond else f' <= {args.tolerance:g}'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
