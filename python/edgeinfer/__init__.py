"""Score ONNX models compiled by edgeinfer inside their WebAssembly sandbox, from Python.

    import edgeinfer, numpy as np
    model = edgeinfer.Model("models/digits/1")        # sha256 verified, manifest limits
    out = model.predict(np.zeros((4, 64), np.float32))  # {"label": array, "probabilities": array}

The same component, the same runtime code and the same bits as ``edgeinfer serve`` and
``edgeinfer batch``. A Model is safe to share between threads (the GIL is released while it
runs) and pickles as its path and digest, so Ray, Dask and Spark ship it to their workers,
which load and verify it once per process (see ``edgeinfer.ray``, ``edgeinfer.dask`` and
``edgeinfer.spark``).
"""

from __future__ import annotations

import os
import struct
import threading
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _native
from ._native import (
    CompileError,
    EdgeInferError,
    IntegrityError,
    InvalidInput,
    LimitExceeded,
    ModelError,
    ModelNotFound,
)

__version__ = _native.__version__

__all__ = [
    "Model",
    "TensorInfo",
    "compile",
    "EdgeInferError",
    "InvalidInput",
    "LimitExceeded",
    "IntegrityError",
    "CompileError",
    "ModelNotFound",
    "ModelError",
]

# Open Inference Protocol datatypes and their numpy dtypes (little-endian, as on the wire).
_DTYPES = {
    "BOOL": np.dtype("bool"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}

#: Rows per call of ``predict_pandas``/``predict_arrow`` (``edgeinfer batch``'s default).
DEFAULT_BATCH_SIZE = 256


class TensorInfo(Tuple[str, str, Tuple[int, ...]]):
    """A tensor's signature: ``name``, ``datatype`` (e.g. ``"FP32"``) and ``shape`` (-1 where
    dynamic), as the server's model metadata gives them."""

    __slots__ = ()

    def __new__(cls, name: str, datatype: str, shape: Sequence[int]):
        return super().__new__(cls, (name, datatype, tuple(shape)))

    @property
    def name(self) -> str:
        return self[0]

    @property
    def datatype(self) -> str:
        return self[1]

    @property
    def shape(self) -> Tuple[int, ...]:
        return self[2]

    @property
    def dtype(self) -> Optional[np.dtype]:
        """The numpy dtype (``None`` for ``BYTES``, which maps to object arrays)."""
        return _DTYPES.get(self.datatype)

    def __repr__(self) -> str:
        return f"TensorInfo(name={self.name!r}, datatype={self.datatype!r}, shape={list(self.shape)})"


# Models loaded in this process, by (directory, digest): unpickling a Model on a worker loads
# and verifies it once per process, whatever the number of tasks that carry it.
_LOADED: Dict[Tuple[str, str, bool], Any] = {}
_LOADED_LOCK = threading.Lock()


# Models inherited through fork(): their runtime's deadline thread did not come along. Kept
# alive (dropping them would join a thread this process does not have) but never used: each
# Model reloads in the process that calls it (see ``Model._native_here``).
_INHERITED: List[Any] = []


def _after_fork_in_child() -> None:
    _INHERITED.extend(_LOADED.values())
    _LOADED.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _load_verified(path: str, sha256: str, reuse_instances: bool) -> Any:
    key = (path, sha256, reuse_instances)
    with _LOADED_LOCK:
        native = _LOADED.get(key)
        if native is None:
            native = _native.NativeModel.load(path, reuse_instances)
            if native.sha256 != sha256:
                raise IntegrityError(
                    f"{path}: the pickled model had component sha256 {sha256}, this directory now holds {native.sha256}"
                )
            _LOADED[key] = native
        return native


class Model:
    """A compiled model version, loaded and verified (the component's sha256 against its
    manifest) and ready to predict under the manifest's limits.

    ``Model(dir)`` loads a version directory (``<repo>/<name>/<version>``);
    ``Model.from_repository(repo, name, version=None)`` the given or newest version.

    Calls reuse warm sandboxes (at most one per thread calling at once; each call gets its
    own fuel budget and deadline; one that traps is thrown away): the same bits as a fresh
    sandbox, without its start-up cost. ``reuse_instances=False`` runs every call in a fresh
    sandbox, as ``edgeinfer serve`` does for each request.
    """

    def __init__(self, path: Union[str, "os.PathLike[str]"], *, reuse_instances: bool = True):
        self._native = _native.NativeModel.load(os.fspath(path), reuse_instances)
        self._remember()

    @classmethod
    def from_repository(
        cls,
        repo: Union[str, "os.PathLike[str]"],
        name: str,
        version: Optional[int] = None,
        *,
        reuse_instances: bool = True,
    ) -> "Model":
        """Loads ``version`` of model ``name`` from the repository ``repo`` (the newest when
        ``version`` is ``None``)."""
        model = cls.__new__(cls)
        model._native = _native.NativeModel.from_repository(os.fspath(repo), name, version, reuse_instances)
        model._remember()
        return model

    def _remember(self) -> None:
        self._pid = os.getpid()
        self._inputs = [TensorInfo(*s) for s in self._native.inputs]
        self._outputs = [TensorInfo(*s) for s in self._native.outputs]
        self._by_name = {info.name: info for info in self._inputs}
        with _LOADED_LOCK:
            _LOADED.setdefault(self._key(), self._native)

    def _native_here(self) -> Any:
        """The native model, reloaded (and verified) once in a process forked since it was
        loaded."""
        if self._pid != os.getpid():
            _INHERITED.append(self._native)
            self._native = _load_verified(*self._key())
            self._pid = os.getpid()
        return self._native

    def _key(self) -> Tuple[str, str, bool]:
        return (os.fspath(self._native.dir), self._native.sha256, self._native.reuse_instances)

    @classmethod
    def _restore(cls, path: str, sha256: str, reuse_instances: bool = True) -> "Model":
        model = cls.__new__(cls)
        model._native = _load_verified(path, sha256, reuse_instances)
        model._remember()
        return model

    def __reduce__(self):
        # Pickled as where it lives and what it must be: the worker loads it from the same
        # path (a shared or copied repository) and refuses a different component.
        return (Model._restore, self._key())

    # -- metadata ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._native.name

    @property
    def version(self) -> int:
        return self._native.version

    @property
    def path(self) -> str:
        """The version directory."""
        return os.fspath(self._native.dir)

    @property
    def sha256(self) -> str:
        """The component's sha256, verified when it was loaded."""
        return self._native.sha256

    @property
    def inputs(self) -> List[TensorInfo]:
        return list(self._inputs)

    @property
    def outputs(self) -> List[TensorInfo]:
        return list(self._outputs)

    @property
    def limits(self) -> Dict[str, int]:
        """The manifest's per-call limits."""
        fuel, timeout_ms, memory_mb = self._native.limits
        return {"fuel": fuel, "timeout_ms": timeout_ms, "memory_mb": memory_mb}

    def __repr__(self) -> str:
        return f"edgeinfer.Model({self.name!r}, version={self.version}, path={self.path!r})"

    # -- prediction ---------------------------------------------------------------------------

    def predict(
        self,
        inputs: Union[np.ndarray, Mapping[str, Any]],
        outputs: Optional[Sequence[str]] = None,
        *,
        fuel: Optional[int] = None,
        timeout_ms: Optional[int] = None,
    ) -> Dict[str, np.ndarray]:
        """Runs one call in a fresh sandbox and returns ``{output name: numpy array}``.

        ``inputs`` maps input names to arrays (anything ``numpy.asarray`` takes), or is one
        array for a single-input model. Numbers are cast to the input's declared datatype when
        numpy calls the cast ``same_kind`` (float64 -> FP32, int64 -> INT32); anything else is
        ``InvalidInput``. ``outputs`` picks outputs (default: all). The manifest's fuel and
        deadline apply per row of the batch dimension, as in ``edgeinfer batch``; ``fuel`` and
        ``timeout_ms`` replace them for this call.
        """
        named = self._named(inputs)
        rows = _rows(named)
        if rows > 1:
            limits = self.limits
            fuel = fuel if fuel is not None else limits["fuel"] * rows
            timeout_ms = timeout_ms if timeout_ms is not None else limits["timeout_ms"] * rows
        wire = [_to_wire(info, array) for info, array in named]
        answer = self._native_here().infer(wire, list(outputs) if outputs else [], fuel, timeout_ms)
        return {name: _from_wire(datatype, shape, data) for name, datatype, shape, data in answer}

    def profile(self, inputs: Union[np.ndarray, Mapping[str, Any]], runs: int = 10) -> List[Tuple[str, str, float]]:
        """The per-operator profile: runs the model ``runs`` times on ``inputs`` in one fresh
        sandbox, one node of the optimized plan at a time, and returns ``(node, operator,
        seconds)`` for each node, summed over the runs, in plan order."""
        wire = [_to_wire(info, array) for info, array in self._named(inputs)]
        return [tuple(row) for row in self._native_here().profile(wire, runs)]

    def predict_pandas(
        self,
        frame: Any,
        columns: Optional[Sequence[str]] = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        outputs: Optional[Sequence[str]] = None,
    ):
        """Scores a pandas DataFrame (a single-input model's feature columns, ``columns`` in
        the model's order, default: all) in calls of ``batch_size`` rows and returns a
        DataFrame with one column per output element (``label``, ``probabilities_0``...),
        indexed like ``frame``: the columns ``edgeinfer batch`` writes."""
        import pandas as pd

        features = frame if columns is None else frame[list(columns)]
        matrix = _table_matrix(self._inputs, lambda dtype: features.to_numpy(dtype=dtype))
        scored = self._predict_rows(matrix, batch_size, outputs)
        return pd.DataFrame(_flatten_columns(scored, self.outputs), index=frame.index)

    def predict_arrow(
        self,
        table: Any,
        columns: Optional[Sequence[str]] = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        outputs: Optional[Sequence[str]] = None,
    ):
        """The same as ``predict_pandas`` for a ``pyarrow.Table`` or ``RecordBatch``; returns a
        ``pyarrow.Table``."""
        import pyarrow as pa

        names = list(columns) if columns is not None else list(table.schema.names)
        matrix = _table_matrix(
            self._inputs,
            lambda dtype: np.column_stack(
                [np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=dtype) for name in names]
            ),
        )
        scored = self._predict_rows(matrix, batch_size, outputs)
        return pa.table(_flatten_columns(scored, self.outputs))

    def _predict_rows(
        self, matrix: np.ndarray, batch_size: int, outputs: Optional[Sequence[str]]
    ) -> Dict[str, np.ndarray]:
        if len(self.inputs) != 1:
            raise InvalidInput(
                f"model '{self.name}' has {len(self.inputs)} inputs; predict_pandas and predict_arrow score "
                "single-input models (use predict with a dict of arrays)"
            )
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        info = self.inputs[0]
        if matrix.ndim != 2:
            raise InvalidInput(f"input '{info.name}': expected a table of rows, got {matrix.ndim} dimensions")
        parts: Dict[str, List[np.ndarray]] = {}
        for start in range(0, len(matrix), batch_size):
            answer = self.predict({info.name: matrix[start : start + batch_size]}, outputs)
            for name, array in answer.items():
                parts.setdefault(name, []).append(array)
        if not parts:  # no rows: empty outputs of the declared inner shapes
            return {
                o.name: np.empty((0,) + tuple(max(d, 0) for d in o.shape[1:]), dtype=o.dtype or object)
                for o in self._outputs
                if not outputs or o.name in outputs
            }
        return {name: np.concatenate(arrays) for name, arrays in parts.items()}

    def _named(self, inputs: Union[np.ndarray, Mapping[str, Any]]) -> List[Tuple[TensorInfo, Any]]:
        declared = self._inputs
        if not isinstance(inputs, Mapping):
            if len(declared) != 1:
                raise InvalidInput(
                    f"model '{self.name}' has {len(declared)} inputs ({', '.join(i.name for i in declared)}); "
                    "pass a dict of name -> array"
                )
            return [(declared[0], inputs)]
        by_name = self._by_name
        unknown = [name for name in inputs if name not in by_name]
        if unknown:
            raise InvalidInput(
                f"unknown input '{unknown[0]}'; model '{self.name}' takes {', '.join(by_name)}"
            )
        return [(by_name[name], value) for name, value in inputs.items()]


def _table_matrix(inputs: Sequence[TensorInfo], convert) -> np.ndarray:
    """A table's feature columns as one matrix of the single input's dtype (columns of other
    numeric types, Arrow-backed or nullable ones included, are cast like ``astype``)."""
    dtype = inputs[0].dtype if len(inputs) == 1 else None
    try:
        return convert(dtype)
    except (TypeError, ValueError) as error:
        raise InvalidInput(f"input '{inputs[0].name}': the feature columns do not convert to {inputs[0].datatype}: {error}") from None


def _rows(named: List[Tuple[TensorInfo, Any]]) -> int:
    """The batch dimension's size, when the first input's first dimension is dynamic."""
    if not named:
        return 1
    info, value = named[0]
    shape = value.shape if type(value) is np.ndarray else np.shape(value)
    if info.shape and info.shape[0] == -1 and len(shape) > 0:
        return max(int(shape[0]), 1)
    return 1


def _to_wire(info: TensorInfo, value: Any) -> Tuple[str, str, List[int], bytes]:
    if info.datatype == "BYTES":
        array = np.asarray(value, dtype=object)
        items = [item.encode() if isinstance(item, str) else bytes(item) for item in array.reshape(-1)]
        data = b"".join(struct.pack("<I", len(item)) + item for item in items)
        return (info.name, "BYTES", list(array.shape), data)
    dtype = _DTYPES[info.datatype]
    array = value if type(value) is np.ndarray else np.asarray(value)
    if array.dtype != dtype:
        if not np.can_cast(array.dtype, dtype, casting="same_kind"):
            raise InvalidInput(
                f"input '{info.name}': expected {info.datatype}, got numpy {array.dtype} (no same-kind cast)"
            )
        array = array.astype(dtype)
    # tobytes() writes C order whatever the array's layout.
    return (info.name, info.datatype, list(array.shape), array.tobytes())


def _from_wire(datatype: str, shape: Sequence[int], data: bytearray) -> np.ndarray:
    if datatype == "BYTES":
        items, offset = [], 0
        while offset < len(data):
            (length,) = struct.unpack_from("<I", data, offset)
            items.append(bytes(data[offset + 4 : offset + 4 + length]))
            offset += 4 + length
        out = np.empty(len(items), dtype=object)
        out[:] = items
        return out.reshape(shape)
    return np.frombuffer(data, dtype=_DTYPES[datatype]).reshape(shape)


def _flatten_columns(scored: Mapping[str, np.ndarray], outputs: Sequence[TensorInfo]) -> Dict[str, np.ndarray]:
    """The columns ``edgeinfer batch`` writes to CSV: ``name`` for an output declared with one
    value per row (shape ``[-1]``), ``name_0``, ``name_1``... otherwise, in the model's order."""
    columns: Dict[str, np.ndarray] = {}
    for info in outputs:
        if info.name not in scored:
            continue
        array = scored[info.name] if scored[info.name].ndim > 0 else scored[info.name].reshape(1)
        flat = array.reshape(len(array), int(np.prod(array.shape[1:], dtype=np.int64)))
        if len(info.shape) <= 1:
            columns[info.name] = flat[:, 0]
        else:
            for index in range(flat.shape[1]):
                columns[f"{info.name}_{index}"] = flat[:, index]
    return columns


def compile(
    onnx: Union[str, "os.PathLike[str]"],
    repo: Union[str, "os.PathLike[str]"],
    name: str,
    version: Optional[int] = None,
    *,
    fuel: Optional[int] = None,
    timeout_ms: Optional[int] = None,
    memory_mb: Optional[int] = None,
) -> str:
    """Compiles an ONNX model into ``<repo>/<name>/<version>/`` as ``edgeinfer compile``
    does (the next free version when ``version`` is ``None``) and returns that directory."""
    return os.fspath(
        _native.compile(os.fspath(onnx), os.fspath(repo), name, version, fuel, timeout_ms, memory_mb)
    )
