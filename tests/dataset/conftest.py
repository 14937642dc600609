"""Fixtures for the dataset engine: a folder of real-world mixed images, made on the fly."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

RED, BLUE = (220, 20, 20), (20, 20, 220)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def noise(width: int, height: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(arr[..., 0] if channels == 1 else arr, mode)


def oriented_jpeg(path: Path, orientation: int = 6) -> None:
    """120x80 stored: top half red, bottom half blue, with an EXIF orientation tag."""
    im = Image.new("RGB", (120, 80), BLUE)
    im.paste(RED, (0, 0, 120, 40))
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(path, "JPEG", quality=95, exif=exif.tobytes())


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims absurd dimensions (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


def truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    noise(200, 150, seed=9).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    return data[: len(data) // 2]


def make_mixed_folder(folder: Path) -> dict[str, Path]:
    """Every kind of file a user's photo folder holds. Returns name -> path for the tests."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    def add(name: str) -> Path:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        files[name] = path
        return path

    oriented_jpeg(add("portrait.jpg"))
    (folder / "portrait.txt").write_text("a red and blue card, studio\n", encoding="utf-8")
    Image.new("CMYK", (90, 60), (0, 255, 255, 0)).save(add("cmyk.jpg"), "JPEG", quality=95)
    grad = (np.linspace(0, 65535, 96 * 64).reshape(64, 96)).astype(np.uint16)
    Image.fromarray(grad).save(add("deep16.png"))
    pal = Image.new("P", (80, 80), 1)
    pal.putpalette([255, 0, 255] + [0, 160, 0] + [0, 0, 0] * 254)
    pal.paste(0, (0, 0, 40, 80))  # left half: index 0, the transparent one
    pal.save(add("palette.gif"), transparency=0)
    pal.save(add("palette.png"), transparency=0)
    rgba = Image.new("RGBA", (64, 96), (0, 0, 255, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 64, 48))  # top half fully transparent
    rgba.save(add("alpha.png"))
    noise(100, 70, seed=1).save(add("pic.webp"), "WEBP", quality=90)
    noise(72, 72, seed=2).save(add("café_猫.png"))
    noise(64, 80, seed=3).save(add("фото.jpg"), "JPEG", quality=90)
    (folder / "фото.caption").write_text("кошка, sitting", encoding="utf-8")
    # Same stem, different files (in two folders and in one folder).
    noise(70, 70, seed=4).save(add("a/cat.png"))
    noise(70, 70, seed=5).save(add("b/cat.png"))
    (folder / "b" / "cat.caption").write_text("a cat, kohya caption", encoding="utf-8")
    noise(70, 70, seed=6).save(add("a/cat.jpg"), "JPEG")
    # Duplicates: same bytes under two names.
    noise(66, 66, seed=7).save(add("dup_one.png"))
    add("dup_two.png").write_bytes(files["dup_one.png"].read_bytes())
    # kohya repeat folder
    noise(64, 64, seed=8).save(add("10_mychar/char.png"))
    # Bad files
    add("truncated.jpg").write_bytes(truncated_jpeg())
    add("empty.png").write_bytes(b"")
    add("notes.png").write_text("this is not an image\n")
    add("bomb.png").write_bytes(bomb_png())
    add("readme.md").write_text("# my photos\n")
    return files


GOOD = {"portrait.jpg", "cmyk.jpg", "deep16.png", "palette.gif", "palette.png", "alpha.png", "pic.webp",
        "café_猫.png", "фото.jpg", "a/cat.png", "b/cat.png", "a/cat.jpg", "dup_one.png", "10_mychar/char.png"}
BAD = {"truncated.jpg", "empty.png", "notes.png", "bomb.png", "readme.md"}


@pytest.fixture
def mixed(tmp_path) -> dict[str, Path]:
    return make_mixed_folder(tmp_path / "photos")


@pytest.fixture
def project(root):
    from loradeck.trainer.dataset.project import create_project

    return create_project("cats", root, trigger_word="sks cat")


@pytest.fixture
def small_project(root):
    """A project prepared at 64 px from a few plain images (fast)."""
    from loradeck.trainer.config import project_settings as settings
    from loradeck.trainer.dataset.project import create_project

    proj = create_project("tiny", root)
    settings.update(proj.settings_file, "prep", {"resolution": 64})
    return proj
