"""Loading and running a WD14-style booru tagger (ONNX), the anime/illustration counterpart of BLIP.

    load_tagger(name, device="auto") -> Tagger(session, labels, size, ...)
    prepare_image(path, size) -> float32 array (size, size, 3), BGR, 0-255
    tagger.predict(batch) -> float32 array (N, len(labels)) of probabilities

The WD14 family (SmilingWolf's wd-v1-4-*, wd-*-v3 and the eva02 taggers) ships the same two files:
`model.onnx`, whose one input is NHWC float32 of the model's square size with BGR channels in 0-255
(images padded to a square on white, then resized), and whose output already holds sigmoid
probabilities, one per row of `selected_tags.csv` (`tag_id,name,category,count`; category 9 is a
rating, 0 a general tag, 4 a character).

`name` is a local folder holding both files, a Hugging Face repo id resolved through the HF cache
(HF_HUB_OFFLINE honoured), or `synthetic:wd14-tiny` (random weights, built offline; tests, demo). When the files are not there the user gets one ModelError naming the
model and the command that fetches it. onnxruntime runs on CUDA when its CUDA provider is present,
else on the CPU. Heavy imports happen inside functions: importing this module is cheap.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loradeck.trainer.captions.wd14_synthetic import synthetic_tagger_path
from loradeck.trainer.config.project_settings import DEFAULT_TAGGER  # noqa: F401 (callers name it from here)
from loradeck.trainer.errors import ConfigError, ModelError

MODEL_FILE = "model.onnx"
TAGS_FILE = "selected_tags.csv"
CATEGORY_GENERAL, CATEGORY_CHARACTER, CATEGORY_RATING = 0, 4, 9
# Used when the model's input side is symbolic (the WD14 family is 448 px).
FALLBACK_SIZE = 448


@dataclass(frozen=True)
class Label:
    """One row of selected_tags.csv, in model output order."""

    name: str
    category: int


@dataclass
class Tagger:
    """A loaded tagger: an onnxruntime session and the labels of its outputs."""

    name: str
    session: Any            # onnxruntime.InferenceSession
    labels: list[Label]
    size: int               # square input side in px
    input_name: str
    output_name: str
    provider: str           # the execution provider in use, e.g. CUDAExecutionProvider
    max_batch: int | None   # None: any batch size; else the model's fixed batch dimension

    @property
    def device(self) -> str:
        return "cuda" if self.provider.startswith("CUDA") else "cpu"

    def predict(self, batch) -> Any:
        """Probabilities (N, len(labels)) for a (N, size, size, 3) float32 BGR batch."""
        import numpy as np  # numpy: only once tagging runs; the CLI and the TUI import this module

        out = self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(batch, np.float32)})[0]
        return np.asarray(out, dtype=np.float32).reshape(len(batch), -1)


def read_labels(path: Path) -> list[Label]:
    """selected_tags.csv -> labels in output order. ModelError if it is not that file."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise ModelError(f"cannot read {path}: {e.strerror or e}") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise ModelError(f"{path} is not a tag list: {e}") from None
    if not rows or "name" not in rows[0] or "category" not in rows[0]:
        raise ModelError(f"{path} is not a WD14 tag list (needs the columns name and category)")
    labels = []
    for n, row in enumerate(rows, 2):
        try:
            labels.append(Label(row["name"], int(row["category"])))
        except (TypeError, ValueError):
            raise ModelError(f"{path} line {n}: category {row.get('category')!r} is not a number") from None
    return labels


def providers_for(device: str = "auto") -> list[str]:
    """onnxruntime execution providers for `device` (auto | cpu | cuda | cuda:N)."""
    import onnxruntime as ort  # onnxruntime: only once tagging runs; the CLI and the TUI import this module

    available = ort.get_available_providers()
    device = (device or "auto").strip()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "auto":
        return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + \
            ["CPUExecutionProvider"]
    if device == "cuda" or device.startswith("cuda:"):
        if "CUDAExecutionProvider" not in available:
            raise ConfigError(f"device {device!r} asked for, but onnxruntime has no CUDA provider here",
                              hint="install onnxruntime-gpu, or use --device cpu")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ConfigError(f"unknown device {device!r}", hint="use auto, cpu, cuda or cuda:N")


def _provider_options(device: str, providers: list[str]) -> list[Any]:
    if providers[0] == "CUDAExecutionProvider" and device.startswith("cuda:"):
        return [("CUDAExecutionProvider", {"device_id": int(device.split(":", 1)[1] or 0)}),
                "CPUExecutionProvider"]
    return list(providers)


def load_tagger(name: str = DEFAULT_TAGGER, *, device: str = "auto", threads: int = 0) -> Tagger:
    """Load a WD14-style tagger (see the module docstring for `name`)."""
    try:
        import onnxruntime as ort  # onnxruntime: only once tagging runs; the CLI and the TUI import this module
    except ImportError:
        raise ModelError("the WD14 tagger needs onnxruntime, which is not installed",
                         hint="pip install onnxruntime (or onnxruntime-gpu on a CUDA box)") from None
    folder = resolve_model_files(name)
    labels = read_labels(folder / TAGS_FILE)
    providers = providers_for(device)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # provider fallbacks are noise on the user's terminal
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(folder / MODEL_FILE), sess_options=options,
                                       providers=_provider_options(device, providers))
    except Exception as e:  # noqa: BLE001 - a damaged or foreign file: one clear line
        reason = " ".join(str(e).split())[:160] or type(e).__name__
        raise ModelError(f"cannot load tagger model {folder / MODEL_FILE}: {reason}") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shape = list(inputs[0].shape)
    if len(inputs) != 1 or len(shape) != 4 or shape[3] not in (3, "3"):
        raise ModelError(f"{name!r} is not a WD14-style tagger: its input is {inputs[0].shape},"
                         " not one NHWC image batch (N, size, size, 3)")
    size = shape[1] if isinstance(shape[1], int) and shape[1] > 0 else FALLBACK_SIZE
    width = outputs[0].shape[-1] if outputs[0].shape else None
    if isinstance(width, int) and width != len(labels):
        raise ModelError(f"tagger {name!r}: the model has {width} outputs but {TAGS_FILE} lists {len(labels)}"
                         " tags", hint="the two files must come from the same model repository")
    max_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    return Tagger(name=name, session=session, labels=labels, size=int(size), input_name=inputs[0].name,
                  output_name=outputs[0].name, provider=session.get_providers()[0], max_batch=max_batch)


def resolve_model_files(name: str) -> Path:
    """The folder holding model.onnx and selected_tags.csv for `name` (a folder or an HF repo id)."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("tagger model name is empty", hint=f"for example --model {DEFAULT_TAGGER}")
    name = name.strip()
    if name.startswith("synthetic:"):  # built offline (tests, the demo): loradeck.trainer.captions.wd14_synthetic
        return synthetic_tagger_path(name[len("synthetic:"):])
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
        if not path.is_dir():
            raise ModelError(f"tagger model folder {name!r} does not exist" if not path.exists()
                             else f"tagger model {name!r} is not a folder",
                             hint=f"pass a folder with {MODEL_FILE} and {TAGS_FILE}, or a Hugging Face id"
                                  f" such as {DEFAULT_TAGGER}")
        missing = [f for f in (MODEL_FILE, TAGS_FILE) if not (path / f).is_file()]
        if missing:
            raise ModelError(f"tagger model folder {path} has no {' or '.join(missing)}",
                             hint=f"a WD14 tagger folder holds {MODEL_FILE} and {TAGS_FILE}")
        return path
    return _from_hf_cache(name)


def _offline() -> str | None:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return var
    return None


def _from_hf_cache(repo: str) -> Path:
    """Both files through the HF cache (downloaded when online and missing); ModelError otherwise."""
    try:
        # huggingface_hub: only once tagging runs; the CLI and the TUI import this module
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - transformers brings it
        hf_hub_download = None
    paths = []
    offline = _offline()
    for filename in (MODEL_FILE, TAGS_FILE):
        try:
            if hf_hub_download is None:
                raise OSError("huggingface_hub is not installed")
            paths.append(Path(hf_hub_download(repo, filename, local_files_only=bool(offline))))
        except Exception:  # noqa: BLE001 - not cached, no network, no such repo: the same advice
            where = f"is not in the Hugging Face cache and {offline} is set" if offline else \
                "is not in the Hugging Face cache and could not be downloaded (no network, or no such model)"
            raise ModelError(f"tagger model {repo!r} {where}",
                             hint=f"fetch it once where there is network: `hf download {repo} {MODEL_FILE}"
                                  f" {TAGS_FILE}`, or pass --model with a folder holding both files") from None
    if paths[0].parent != paths[1].parent:  # both come from one snapshot folder; be safe anyway
        raise ModelError(f"tagger model {repo!r}: {MODEL_FILE} and {TAGS_FILE} are in different snapshots",
                         hint=f"download both again: `hf download {repo} {MODEL_FILE} {TAGS_FILE}`")
    return paths[0].parent


class BadImage(Exception):
    """An image that cannot be tagged; str() is the one-line reason."""


def prepare_image(path: Path, size: int):
    """Decode `path` as the WD14 family expects: alpha on white, padded to a centred white square,
    resized to `size` (bicubic), BGR channel order, float32 in 0-255. Raises BadImage."""
    import numpy as np  # numpy, PIL: only once tagging runs; the CLI and the TUI import this module
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im.draft("RGB", (size, size))  # JPEGs decode at a reduced scale that still covers `size`
            im.load()
            im = ImageOps.exif_transpose(im)
            if "A" in im.mode or "transparency" in im.info:
                rgba = im.convert("RGBA")
                im = Image.new("RGB", rgba.size, (255, 255, 255))
                im.paste(rgba, mask=rgba.getchannel("A"))
            else:
                im = im.convert("RGB")
    except FileNotFoundError:
        raise BadImage("file disappeared while tagging") from None
    except Image.DecompressionBombError as e:
        raise BadImage(f"too many pixels ({e})") from None
    except Exception as e:  # noqa: BLE001 - whatever a malformed file makes PIL raise, skip that file
        raise BadImage(f"cannot decode image: {' '.join(str(e).split()) or type(e).__name__}") from None
    side = max(im.size)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
    if side != size:
        square = square.resize((size, size), Image.Resampling.BICUBIC)
    rgb = np.asarray(square, dtype=np.float32)
    return np.ascontiguousarray(rgb[:, :, ::-1])  # the models were trained on BGR input
