"""onnxruntime sessions as every Portrait model runs them: CPU, one thread each.

One thread per session because the worker runs one process per core and batches its
calls; more threads than cores only add contention.
"""

from __future__ import annotations

from typing import Any


def cpu_session(model: bytes | str) -> Any:
    """An inference session for ONNX bytes or a file path."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
