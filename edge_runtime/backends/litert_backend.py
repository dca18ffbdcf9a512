"""LiteRT (TFLite) backend: ``ai-edge-litert``'s Interpreter, or ``tflite-runtime`` where that is what the device has.

The interpreter library is detected when this module is imported (first use of the ``litert`` backend):
``ai-edge-litert`` is preferred, ``tflite-runtime`` is the fallback. XNNPACK (the default CPU delegate of
both) and the thread count come from the caller (the device profile or ``threads=``).

Files are fixed-batch (``litert-torch`` cannot convert a dynamic batch): :attr:`Session.batch_size` is the
file's batch and the runtime's ``SegmentRunner`` runs other batch sizes as padded chunks of it.
Quantized files with int8 inputs/outputs (``ai-edge-quantizer``'s static int8) are presented as float:
the session quantizes inputs and dequantizes outputs with each tensor's own scale and zero point.

Known-bad combination, refused (see :func:`check_runtime_supports`): ``tflite-runtime`` 2.14 needs
numpy<2, and computes dynamic-range int8 models (int8 weights, float activations) wrongly.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.backends.base import Backend, Session
from edge_runtime.errors import BackendError, BundleError, ConfigError, InputError
from edge_runtime.manifest import TensorSpec

#: interpreter distributions, in order of preference: (distribution name, module holding ``Interpreter``)
INTERPRETER_PACKAGES: tuple[tuple[str, str], ...] = (
    ("ai-edge-litert", "ai_edge_litert.interpreter"),
    ("tflite-runtime", "tflite_runtime.interpreter"),
)

#: the model kinds :func:`model_quantization` tells apart
FLOAT, FLOAT16_WEIGHTS, INT8_STATIC, DYNAMIC_RANGE = "float", "fp16_weights", "int8_static", "dynamic_range"


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def check_runtime_supports(package: str, version: str, *, numpy_version: str | None = None,
                           quantization: str | None = None, path: object = None) -> None:
    """Refuse the interpreter/numpy/model combinations known to fail or to compute wrong answers.

    Args:
        package: the interpreter distribution (``ai-edge-litert`` or ``tflite-runtime``).
        version: its version string.
        numpy_version: the installed numpy version (checked when given).
        quantization: the model's kind from :func:`model_quantization` (checked when given).
        path: the model file, named in the error.

    Raises:
        ConfigError: tflite-runtime 2.14 with numpy >= 2 (its extension is built against numpy 1).
        BundleError: tflite-runtime 2.14 asked to run a dynamic-range int8 model (it computes it wrongly).

    Example:
        >>> check_runtime_supports("tflite-runtime", "2.16.1", numpy_version="2.1.0", quantization="dynamic_range")
        >>> check_runtime_supports("tflite-runtime", "2.14.0", quantization="int8_static")
    """
    if package != "tflite-runtime" or _version_tuple(version)[:2] != (2, 14):
        return
    if numpy_version is not None and _version_tuple(numpy_version)[:1] >= (2,):
        raise ConfigError(
            f"tflite-runtime {version} needs numpy<2 but numpy {numpy_version} is installed; "
            "install ai-edge-litert (preferred) or pip install 'numpy<2'"
        )
    if quantization == DYNAMIC_RANGE:
        raise BundleError(
            f"tflite-runtime {version} computes dynamic-range int8 models wrongly; refusing to run this "
            "int8_dynamic file: install ai-edge-litert, or load another precision (fp32, fp16, int8)",
            path=path,
        )


def detect_interpreter() -> tuple[str, str, Any]:
    """Find the interpreter library: (distribution name, version, ``Interpreter`` module).

    Raises:
        ImportError: neither ai-edge-litert nor tflite-runtime is installed.
        ConfigError: only tflite-runtime 2.14 is installed, next to numpy >= 2.
    """
    for dist, module_name in INTERPRETER_PACKAGES:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        check_runtime_supports(dist, version, numpy_version=np.__version__)
        return dist, version, importlib.import_module(module_name)
    raise ImportError("the litert backend needs ai-edge-litert (pip install ai-edge-litert) or tflite-runtime")


_PACKAGE, _VERSION, _MODULE = detect_interpreter()


def model_quantization(interpreter: Any) -> str:
    """What kind of model an interpreter holds, from its operators' tensor types.

    ``dynamic_range``: an operator (other than DEQUANTIZE) takes float activations and int8 weights and
    gives float outputs; ``int8_static``: int8 activations; ``fp16_weights``: float16 constants
    dequantized to float; else ``float``.
    """
    types = {t["index"]: np.dtype(t["dtype"]) for t in interpreter.get_tensor_details()}
    f32, i8, f16 = np.dtype(np.float32), np.dtype(np.int8), np.dtype(np.float16)
    kind = FLOAT
    for op in interpreter._get_ops_details():  # noqa: SLF001 (public in both libraries' docs, underscored)
        ins = {types.get(i) for i in op["inputs"] if i >= 0}
        outs = {types.get(i) for i in op["outputs"] if i >= 0}
        if op["op_name"] not in ("DEQUANTIZE", "DELEGATE") and f32 in ins and i8 in ins and f32 in outs:
            return DYNAMIC_RANGE
        if i8 in outs and op["op_name"] != "DEQUANTIZE":
            kind = INT8_STATIC
        elif kind == FLOAT and f16 in ins and op["op_name"] == "DEQUANTIZE":
            kind = FLOAT16_WEIGHTS
    return kind


class LiteRTSession(Session):
    """One ``.tflite`` file behind the :class:`Session` interface (fixed batch, float I/O)."""

    #: the model's bytes, when loaded from memory (the interpreter reads this buffer: it must outlive it)
    model_content: bytes | None = None

    def __init__(self, interpreter: Any, path: str | Path) -> None:
        self._it = interpreter
        self._path = Path(path)
        interpreter.allocate_tensors()
        signatures = interpreter.get_signature_list()
        if signatures:
            runner = interpreter.get_signature_runner(next(iter(signatures)))
            ins = list(runner.get_input_details().items())
            outs = list(runner.get_output_details().items())
        else:  # a file without signatures: tensor names
            ins = [(d["name"], d) for d in interpreter.get_input_details()]
            outs = [(d["name"], d) for d in interpreter.get_output_details()]
        self.input_names = [name for name, _ in ins]
        self.output_names = [name for name, _ in outs]
        self._inputs = [self._io(d) for _, d in ins]
        self._outputs = [self._io(d) for _, d in outs]
        self._shapes = [tuple(int(s) for s in d["shape"]) for _, d in ins]
        self.batch_size = self._shapes[0][0] if self._shapes and self._shapes[0] else None
        self.quantization = model_quantization(interpreter)
        self.tensors = {name: TensorSpec(name, tuple(int(s) for s in d["shape"]), self._dtype(d))
                        for name, d in [*ins, *outs]}

    @staticmethod
    def _dtype(d: dict[str, Any]) -> str:
        """The dtype the session presents: float for quantized int8 I/O (it (de)quantizes), else the tensor's."""
        scale, _ = d.get("quantization", (0.0, 0))
        dtype = np.dtype(d["dtype"])
        return "float32" if np.issubdtype(dtype, np.integer) and scale > 0 else dtype.name

    @staticmethod
    def _io(d: dict[str, Any]) -> tuple[int, np.dtype, float, int]:
        scale, zero = d.get("quantization", (0.0, 0))
        return int(d["index"]), np.dtype(d["dtype"]), float(scale), int(zero)

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        for name, shape, (index, dtype, scale, zero) in zip(self.input_names, self._shapes, self._inputs):
            if name not in inputs:
                raise InputError(f"{self._path.name}: missing input {name!r}")
            x = inputs[name]
            if tuple(x.shape) != shape:
                raise InputError(f"{self._path.name}: input {name!r} has shape {tuple(x.shape)}; this file "
                                 f"takes exactly {shape} (fixed batch {shape[0]})")
            if np.issubdtype(dtype, np.integer) and scale > 0:
                info = np.iinfo(dtype)
                x = np.clip(np.round(x / scale) + zero, info.min, info.max)
            self._it.set_tensor(index, np.ascontiguousarray(x, dtype=dtype))
        try:
            self._it.invoke()
        except (RuntimeError, ValueError) as exc:  # the interpreter's failures
            raise BackendError(f"{_PACKAGE} failed to run the graph: {exc}".splitlines()[0], path=self._path) from None
        out = []
        for index, dtype, scale, zero in self._outputs:
            y = self._it.get_tensor(index)
            if np.issubdtype(dtype, np.integer) and scale > 0:
                y = (y.astype(np.float32) - np.float32(zero)) * np.float32(scale)
            out.append(y)
        return out


class LiteRTBackend(Backend):
    """Runs ``.tflite`` files with the LiteRT interpreter (XNNPACK delegate by default).

    Args:
        threads: interpreter threads (None: the library's default).
        xnnpack: use the XNNPACK CPU delegate (default True; False runs the built-in kernels).

    Example:
        >>> backend = create_backend("litert", threads=4)            # doctest: +SKIP
        >>> session = backend.load_bytes(Path("segments/segment_0_b1.tflite").read_bytes())   # doctest: +SKIP
    """

    name = "litert"
    file_format = "tflite"

    def __init__(self, threads: int | None = None, xnnpack: bool = True, **options: Any) -> None:
        super().__init__(threads, **options)
        self.xnnpack = bool(xnnpack)

    def load_bytes(self, data: bytes, *, source: str | Path = "<memory>") -> Session:
        path = source
        kwargs: dict[str, Any] = {"model_content": bytes(data)}
        if self.threads:
            kwargs["num_threads"] = int(self.threads)
        if not self.xnnpack:
            kwargs["experimental_op_resolver_type"] = _MODULE.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            interpreter = _MODULE.Interpreter(**kwargs)
            session = LiteRTSession(interpreter, Path(path))
        except (ValueError, RuntimeError) as exc:  # the interpreter raises these for unreadable models
            raise BundleError(f"{_PACKAGE} could not load the model: {exc}".splitlines()[0], path=path) from None
        check_runtime_supports(_PACKAGE, _VERSION, quantization=session.quantization, path=path)
        session.model_content = kwargs["model_content"]  # the interpreter reads this buffer: keep it alive
        return session

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "threads": self.threads, "interpreter": _PACKAGE, "version": _VERSION,
                "xnnpack": self.xnnpack}
