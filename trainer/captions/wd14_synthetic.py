"""Synthetic WD14-format taggers: a real `model.onnx` + `selected_tags.csv`, built offline.

    write_tagger(folder, labels, size=64, channels=0, weight=None, bias=None, seed=0)
    synthetic_tagger_path("wd14-tiny") -> folder (built once into the loradeck cache)

The model has the WD14 signature (one NHWC float32 BGR input of a square size, one output of sigmoid
probabilities per CSV row) and is built with `onnx.helper`, so the whole tagging path (onnxruntime,
preprocessing, thresholds, captions) runs in tests and the demo without downloading anything.

- `channels=0`: probabilities = sigmoid(mean BGR colour / 255 @ weight + bias). Tests choose `weight`
  and `bias` so that a given colour fires given tags.
- `channels=C`: a small strided-conv stack (C channels) before a global pool and the tag layer, with
  seeded random weights: enough work per image for a batching benchmark to mean something.

Needs the `onnx` package (in loradeck's `test` extra); onnxruntime alone only runs models.
"""

from __future__ import annotations

import csv
import shutil
import tempfile
from pathlib import Path

from loradeck.trainer.cache_dir import CACHE_ENV, cache_dir
from loradeck.trainer.errors import ModelError

SYNTHETIC_TAGGERS = ("wd14-tiny",)
_VERSION = 1

# synthetic:wd14-tiny's tags: a few of each category, the kaomoji included (its underscore stays).
TINY_LABELS = [("general", 9), ("sensitive", 9), ("questionable", 9), ("explicit", 9),
               ("1girl", 0), ("solo", 0), ("long_hair", 0), ("smile", 0), ("blue_sky", 0), ("outdoors", 0),
               ("simple_background", 0), ("white_background", 0), ("red_theme", 0), ("^_^", 0),
               ("flower", 0), ("looking_at_viewer", 0), ("zx_character", 4), ("qy_character", 4)]


def write_tagger(folder: Path, labels: list[tuple[str, int]], *, size: int = 64, channels: int = 0,
                 weight=None, bias=None, seed: int = 0, fixed_batch: int | None = None) -> Path:
    """Write model.onnx and selected_tags.csv for `labels` [(name, category)] into `folder`."""
    try:
        import numpy as np  # numpy, onnx: only to build the synthetic tagger (onnx is a test extra)
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise ModelError("building a synthetic tagger needs the onnx package",
                         hint="pip install onnx (it is in loradeck's test extra)") from None
    rng = np.random.default_rng(seed)
    n = len(labels)
    batch = fixed_batch if fixed_batch else "batch"
    nodes, inits = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array, dtype=np.float32), name))
        return name

    nodes.append(helper.make_node("Mul", ["input", const("scale", 1 / 255)], ["x01"]))
    if channels:
        nodes.append(helper.make_node("Transpose", ["x01"], ["nchw"], perm=[0, 3, 1, 2]))
        prev, c_in = "nchw", 3
        for i in range(3):
            w = rng.normal(0, (2 / (9 * c_in)) ** 0.5, (channels, c_in, 3, 3))
            nodes.append(helper.make_node("Conv", [prev, const(f"w{i}", w), const(f"b{i}", np.zeros(channels))],
                                          [f"c{i}"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
            nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
            prev, c_in = f"r{i}", channels
        nodes.append(helper.make_node("GlobalAveragePool", [prev], ["pooled"]))
        nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], axis=1))
        features = channels
    else:
        nodes.append(helper.make_node("ReduceMean", ["x01"], ["features"], axes=[1, 2], keepdims=0))
        features = 3
    weight = rng.normal(0, 3.0, (features, n)) if weight is None else weight
    bias = rng.normal(-1.0, 1.0, n) if bias is None else bias
    nodes.append(helper.make_node("MatMul", ["features", const("tag_w", weight)], ["logits0"]))
    nodes.append(helper.make_node("Add", ["logits0", const("tag_b", bias)], ["logits"]))
    nodes.append(helper.make_node("Sigmoid", ["logits"], ["predictions_sigmoid"]))
    graph = helper.make_graph(
        nodes, "synthetic_wd14_tagger",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, size, size, 3])],
        [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, [batch, n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime from 1.14 on
    onnx.checker.check_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "model.onnx"))
    with open(folder / "selected_tags.csv", "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["tag_id", "name", "category", "count"])
        for i, (name, category) in enumerate(labels):
            out.writerow([1000 + i, name, category, 100 * (n - i)])
    return folder


def synthetic_tagger_path(kind: str = "wd14-tiny") -> Path:
    """The folder of a synthetic tagger, built on first use (atomically: a rename into place)."""
    if kind not in SYNTHETIC_TAGGERS:
        raise ModelError(f"unknown synthetic tagger 'synthetic:{kind}'",
                         hint="known: " + ", ".join("synthetic:" + k for k in SYNTHETIC_TAGGERS))
    target = cache_dir() / "synthetic" / f"{kind}-v{_VERSION}"
    if (target / "model.onnx").is_file() and (target / "selected_tags.csv").is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=target.parent))
    except OSError as e:
        raise ModelError(f"cannot build synthetic:{kind} in {target.parent}: {e.strerror or e}",
                         hint=f"set {CACHE_ENV} to a writable folder") from None
    try:
        write_tagger(staging, TINY_LABELS, size=32)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "model.onnx").is_file():  # another process finished first: same build
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
