"""`loradeck demo`: a ready project made locally, through the real engine."""

from __future__ import annotations

from PIL import Image

from loradeck.trainer.config import project_settings as settings
from loradeck.trainer.dataset.project import Project
from loradeck.trainer.dataset.view import list_dataset


def test_demo_creates_an_imported_prepared_partly_captioned_project(root, cli):
    out = cli("demo", "--no-tui", root=root)
    assert out.returncode == 0, out.stderr
    project = Project(root, "demo")
    s = settings.load(project.settings_file)
    assert s.project.base_model == "synthetic:tiny" and s.project.trigger_word
    assert s.prep.resolution == 128 and s.train["base_model"] == "synthetic:tiny"
    listing = list_dataset(project)
    assert listing.images == listing.originals == 12
    assert 0 < listing.captioned < listing.images  # some, not all
    sizes = set()
    for entry in listing.entries:
        with Image.open(entry.path) as im:
            assert max(im.size) <= 256 and im.width % 8 == 0 and im.height % 8 == 0
            sizes.add(im.size)
    assert len(sizes) > 1  # several aspect buckets
    extra = root / "demo-extra"
    assert {p.name for p in extra.iterdir()} >= {"broken_download.png", "notes.md"}
    # Running it again reuses the project and changes nothing.
    before = sorted(p.name for p in project.dataset.iterdir())
    assert cli("demo", "--no-tui", root=root).returncode == 0
    assert sorted(p.name for p in project.dataset.iterdir()) == before
