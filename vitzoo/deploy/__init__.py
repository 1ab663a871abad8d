"""Deployment: export vitzoo models to ONNX and ``torch.export`` programs, verify and run them.

``onnx``, ``onnxruntime`` and ``onnxscript`` (``pip install vitzoo[deploy]``) are imported only
where an ONNX file is written or run, so importing this package stays light.
"""
from ..utils.lazy import lazy_attributes

_LAZY = {
    'ExportSpec': '.graph', 'InferenceGraph': '.graph', 'UnsupportedExportError': '.graph',
    'build_inference_graph': '.graph', 'OUTPUT_KINDS': '.graph',
    'ExportResult': '.export', 'export_model': '.export', 'verify_export': '.export',
    'ExportVerificationError': '.export', 'DynamicShapeError': '.export', 'verification_sizes': '.export',
    'ExportedModel': '.runtime', 'load_exported': '.runtime', 'is_exported_file': '.runtime',
}

__all__ = list(_LAZY)
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
