"""Opening images safely: is this file an image we can train on, and what is it?

One place decides which files are refused and with what one-line reason (empty, not an image,
unsupported format, decompression bomb or absurd dimensions, truncated, unreadable), and one place
sets Pillow's pixel limit. Both the importer and prep open images through here.

Only Pillow is imported (no torch), so the TUI may call `probe` from a worker thread.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageFile, UnidentifiedImageError

from loradeck.trainer.errors import LoradeckError

# Pillow refuses images above 2x MAX_IMAGE_PIXELS and only warns between 1x and 2x; we refuse
# everything above our limit ourselves (a 100-megapixel photo is fine, a 40000x40000 header is not).
MAX_PIXELS = 150_000_000
MAX_SIDE = 40_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# A truncated file must be refused, never silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# Pillow format name -> the file extension we store it under (originals keep their own suffix
# when it already names the format). MPO is what cameras' multi-picture JPEGs open as.
FORMAT_EXTENSIONS = {
    "JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp",
    "TIFF": ".tif",
}
# Suffixes a stored original may keep (all in loradeck.trainer.dataset.project.IMAGE_EXTENSIONS, which prep lists).
_SUFFIXES_OF = {
    "JPEG": {".jpg", ".jpeg"}, "MPO": {".jpg", ".jpeg"}, "PNG": {".png"},
    "WEBP": {".webp"}, "GIF": {".gif"}, "BMP": {".bmp"}, "TIFF": {".tif", ".tiff"},
}
# Formats people drop into photo folders that Pillow cannot read: say what they are.
_KNOWN_UNSUPPORTED = {
    ".heic": "HEIC", ".heif": "HEIF", ".avif": "AVIF", ".psd": "Photoshop", ".svg": "SVG", ".jxl": "JPEG XL",
    ".cr2": "camera raw", ".cr3": "camera raw", ".nef": "camera raw", ".arw": "camera raw",
    ".dng": "camera raw", ".raf": "camera raw", ".orf": "camera raw", ".rw2": "camera raw",
}
# EXIF orientations 5-8 swap width and height.
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}
EXIF_ORIENTATION_TAG = 0x0112


class ImageRefused(LoradeckError):
    """A file that is not a usable image; `str()` is the one-line reason."""


@dataclass(frozen=True)
class ImageInfo:
    format: str       # Pillow's name: JPEG, PNG, ...
    mode: str         # Pillow mode as stored: RGB, CMYK, P, I;16, RGBA, ...
    width: int        # as displayed, i.e. after EXIF orientation
    height: int
    orientation: int  # EXIF orientation (1 = upright)
    frames: int = 1

    @property
    def extension(self) -> str:
        return FORMAT_EXTENSIONS[self.format]

    def suffix_for(self, name: str) -> str:
        """The suffix to store `name` under: its own if it names this format, else the canonical one."""
        own = Path(name).suffix.lower()
        return Path(name).suffix if own in _SUFFIXES_OF[self.format] else self.extension


def orientation_of(im: Image.Image) -> int:
    try:
        value = im.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except Exception:  # a corrupt EXIF block must not make a good image unusable
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def check_dimensions(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageRefused(f"has no pixels ({width}x{height})")
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise ImageRefused(f"absurd dimensions {width}x{height} (possible decompression bomb;"
                           f" limit {MAX_PIXELS // 1_000_000} megapixels, {MAX_SIDE} px a side)")


def open_image(source: Path | bytes, name: str | None = None) -> Image.Image:
    """Open (lazily) an image file or bytes, refusing bombs; raises ImageRefused with the reason.

    `name` (the file name, when `source` is bytes) only improves the message for known formats
    Pillow cannot read.
    """
    name = name or (source.name if isinstance(source, Path) else "")
    if isinstance(source, bytes):
        if not source:
            raise ImageRefused("empty file")
        fp: object = io.BytesIO(source)
    else:
        try:
            if os.path.getsize(source) == 0:
                raise ImageRefused("empty file")
        except OSError as e:
            raise ImageRefused(f"unreadable: {e.strerror or e}") from None
        fp = source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(fp)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRefused("absurd dimensions (decompression bomb)") from None
    except UnidentifiedImageError:
        kind = _KNOWN_UNSUPPORTED.get(Path(name).suffix.lower())
        if kind:
            raise ImageRefused(f"unsupported format {kind} (convert it to JPEG or PNG first)") from None
        raise ImageRefused("not an image (or a format Pillow cannot read)") from None
    except OSError as e:
        raise ImageRefused(f"unreadable: {e.strerror or e}") from None
    except Exception as e:  # a malformed header can raise almost anything inside a plugin
        raise ImageRefused(f"corrupt image header: {short_reason(e)}") from None
    if im.format not in FORMAT_EXTENSIONS:
        fmt = im.format
        im.close()
        raise ImageRefused(f"unsupported format {fmt} (convert it to JPEG or PNG first;"
                           f" supported: {', '.join(sorted(set(FORMAT_EXTENSIONS) - {'MPO'}))})")
    try:
        check_dimensions(*im.size)
    except ImageRefused:
        im.close()
        raise
    return im


def probe(source: Path | bytes, *, verify: bool = True, name: str | None = None) -> ImageInfo:
    """Describe an image; with `verify` decode it fully so truncated or corrupt data is refused.

    JPEGs are decoded in draft mode (1/8 scale): every byte of the stream is still read, so
    truncation is caught, at a fraction of the cost.
    """
    im = open_image(source, name)
    try:
        width, height = im.size
        orientation = orientation_of(im)
        frames = getattr(im, "n_frames", 1)
        fmt, mode = im.format, im.mode
        if verify:
            if fmt in ("JPEG", "MPO"):
                im.draft(None, (max(1, width // 8), max(1, height // 8)))
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                im.load()
    except ImageRefused:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRefused("absurd dimensions (decompression bomb)") from None
    except OSError as e:
        text = str(e)
        if "truncated" in text or "broken data stream" in text or "image file is" in text:
            raise ImageRefused(f"truncated or corrupt image data ({short_reason(e)})") from None
        raise ImageRefused(f"cannot decode: {short_reason(e)}") from None
    except Exception as e:
        raise ImageRefused(f"cannot decode: {short_reason(e)}") from None
    finally:
        im.close()
    if orientation in _TRANSPOSED_ORIENTATIONS:
        width, height = height, width
    return ImageInfo(fmt, mode, width, height, orientation, frames)


def short_reason(e: BaseException) -> str:
    """An exception as one short line for a refusal reason."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:160]
