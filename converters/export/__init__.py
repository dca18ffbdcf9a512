"""Export: ONNX graphs with their facts, TFLite files, quantized variants, the one verifier, and the bundle writer."""

from converters.export.bundle import export_bundle
from converters.export.onnx import count_flops, count_params, export_onnx, file_entry
from converters.export.verify import verify_bundle_dir

__all__ = ["export_bundle", "count_flops", "count_params", "export_onnx", "file_entry", "verify_bundle_dir"]
