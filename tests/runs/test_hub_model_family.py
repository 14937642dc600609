"""A hub id whose configs are not in the HF cache is classified when its run is created, against a fake
hub on 127.0.0.1 (tests/fake_hub.py): SD 1.x and SDXL are accepted with their family, SD 2.x, SD3 and
Flux refused before a run folder exists, and so are a missing, private or gated repo, a repo that is
not a diffusers model, a hub that is down, and offline mode, each in one line. Resolving a config (what
the train form does on every edit) never asks the hub.

Each create runs in a child process: huggingface_hub reads HF_ENDPOINT, the cache folders and the
offline switch when it is imported, so a child started with them set is a user's shell, exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.fake_hub import FakeHub

UNET_SD1 = {"_class_name": "UNet2DConditionModel", "cross_attention_dim": 768}
UNET_SDXL = {"_class_name": "UNet2DConditionModel", "cross_attention_dim": 2048, "addition_embed_type": "text_time"}
UNET_SD2 = {"_class_name": "UNet2DConditionModel", "cross_attention_dim": 1024}
PART = ["transformers", "CLIPTextModel"]
INDEX_SD = {"_class_name": "StableDiffusionPipeline", "text_encoder": PART,
            "unet": ["diffusers", "UNet2DConditionModel"]}
INDEX_SDXL = {**INDEX_SD, "_class_name": "StableDiffusionXLPipeline",
              "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"]}
INDEX_REFINER = {**INDEX_SDXL, "text_encoder": [None, None]}
INDEX_FLUX = {"_class_name": "FluxPipeline", "transformer": ["diffusers", "FluxTransformer2DModel"]}
INDEX_SD3 = {"_class_name": "StableDiffusion3Pipeline", "transformer": ["diffusers", "SD3Transformer2DModel"]}

REPOS = {
    "someone/sd15": {"model_index.json": INDEX_SD, "unet/config.json": UNET_SD1},
    "someone/sdxl": {"model_index.json": INDEX_SDXL, "unet/config.json": UNET_SDXL},
    "someone/sdxl-refiner": {"model_index.json": INDEX_REFINER, "unet/config.json": UNET_SDXL},
    "someone/sd2": {"model_index.json": INDEX_SD, "unet/config.json": UNET_SD2},
    "someone/flux": {"model_index.json": INDEX_FLUX},
    "someone/sd3": {"model_index.json": INDEX_SD3},
    "someone/one-file": {"README.md": "a single .safetensors checkpoint"},
    "someone/index-only": {"model_index.json": INDEX_SD},
    "someone/slow": {"model_index.json": INDEX_SD, "unet/config.json": UNET_SD1},
}
STALLS = {"someone/slow": 20.0}
REFUSALS = {"someone/private": (401, "RepoNotFound"),  # what the real hub says to a stranger
            "someone/gated": (401, "GatedRepo"),
            "someone/bad-token": (401, None),
            "someone/forbidden": (403, None)}

CREATE = """
import json, sys
from loradeck.trainer.config.resolve import resolve
from loradeck.trainer.dataset.project import open_project
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.runs import lifecycle
project = open_project("toy", sys.argv[1])
resolved = resolve(project, {"base_model": sys.argv[2], "max_train_steps": 1})
out = {"resolved": resolved.family}
try:
    out["run"] = lifecycle.create_run_from(project, resolved).run_id
    out["family"] = resolved.family
except LoradeckError as e:
    out["error"] = e.one_line()
print(json.dumps(out))
"""

# Everything the train form asks while it is edited: the resolve, the preflight and the step count's grain.
RESOLVE_ONLY = """
import json, sys
from loradeck.trainer.config import model_family
from loradeck.trainer.config.resolve import resolve
from loradeck.trainer.dataset import preflight
from loradeck.trainer.dataset.project import open_project
project = open_project("toy", sys.argv[1])
resolved = resolve(project, {"base_model": sys.argv[2], "max_train_steps": 1})
preflight.check(project, resolved.config)
print(json.dumps({"resolved": resolved.family, "grain": model_family.pixel_granularity(sys.argv[2])}))
"""


@pytest.fixture
def hub():
    with FakeHub(REPOS, REFUSALS, STALLS) as running:
        yield running


def hub_env(tmp_path, endpoint: str, offline: bool = False) -> dict[str, str]:
    """A user's shell pointed at `endpoint`, with an empty HF cache of its own (the suite runs offline)."""
    flag = "1" if offline else "0"
    return {"HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_CACHE": str(tmp_path / "hf-cache"),
            "HF_HUB_OFFLINE": flag, "TRANSFORMERS_OFFLINE": flag, "HF_TOKEN": "", "NO_PROXY": "127.0.0.1,localhost"}


def child(code: str, root, model: str, env: dict[str, str]) -> dict:
    full = {k: v for k, v in os.environ.items() if k.lower() not in ("https_proxy", "http_proxy", "all_proxy")}
    full.update(env, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code, str(root), model], capture_output=True, text=True,
                          env=full, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_dirs(project) -> list[str]:
    return sorted(p.name for p in project.runs.iterdir()) if project.runs.is_dir() else []


def project_files(project) -> set[str]:
    return {str(p.relative_to(project.path)) for p in project.path.rglob("*")}


@pytest.mark.parametrize("model, family", [("someone/sdxl", "sdxl"), ("someone/sd15", "sd1")])
def test_an_uncached_sd1_or_sdxl_hub_id_is_read_from_the_hub_when_its_run_is_created(
        project, root, tmp_path, hub, model, family):
    env = hub_env(tmp_path, hub.url)
    out = child(CREATE, root, model, env)
    assert out["resolved"] is None  # not known while resolving: no network there
    assert out["family"] == family and run_dirs(project) == [out["run"]]
    assert f'base_model = "{model}"' in (project.runs / out["run"] / "config.toml").read_text()
    asked = {path.partition("/resolve/main/")[2] for _, path in hub.requests}
    assert asked == {"model_index.json", "unet/config.json"}  # the two configs, never a weight
    # They are in the HF cache the loader reads: offline now, the family is known as for any cached model,
    # and the weights are not, which a run created offline is refused for.
    requests = len(hub.requests)
    again = child(CREATE, root, model, hub_env(tmp_path, hub.url, offline=True))
    assert again["resolved"] == family and f"{model} is not in the Hugging Face cache" in again["error"]
    assert len(hub.requests) == requests and run_dirs(project) == [out["run"]]


@pytest.mark.parametrize("model, says", [
    ("someone/sd2", "base model is SD 2.x"),
    ("someone/flux", "a transformer model (FluxPipeline: SD3, Flux or similar): not supported"),
    ("someone/sd3", "a transformer model (StableDiffusion3Pipeline"),
    ("someone/sdxl-refiner", "an SDXL refiner"),
    ("someone/one-file", "someone/one-file has neither model_index.json nor unet/config.json on the Hugging Face"
                         " hub: not a diffusers Stable Diffusion model"),
    ("someone/index-only", "someone/index-only has no unet/config.json on the Hugging Face hub"),
    ("nobody/missing", "base model nobody/missing was not found on the Hugging Face hub (or it is private)"),
    ("someone/private", "base model someone/private was not found on the Hugging Face hub (or it is private)"),
    ("someone/gated", "base model someone/gated is gated on the Hugging Face hub"),
    ("someone/bad-token", "the Hugging Face hub refused access to base model someone/bad-token (HTTP 401)"),
    ("someone/forbidden", "the Hugging Face hub refused access to base model someone/forbidden (HTTP 403)"),
])
def test_an_unsupported_or_unreadable_hub_id_is_refused_before_a_run_folder_exists(
        project, root, tmp_path, hub, model, says):
    before = project_files(project)
    out = child(CREATE, root, model, hub_env(tmp_path, hub.url))
    assert "run" not in out and says in out["error"], out
    assert "\n" not in out["error"]
    assert run_dirs(project) == [] and project_files(project) == before
    if model in REFUSALS or model == "nobody/missing":
        assert "hf auth login" in out["error"] and "HF_TOKEN" in out["error"]


def test_a_hub_that_is_down_is_refused_at_once_with_how_to_work_offline(project, root, tmp_path):
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there once this socket is closed
    t0 = time.monotonic()
    out = child(CREATE, root, "someone/sdxl", hub_env(tmp_path, closed))
    assert time.monotonic() - t0 < 30  # no back-off of retries
    assert out["error"].startswith("the Hugging Face hub could not be reached to read base model someone/sdxl's")
    assert "hf download someone/sdxl" in out["error"] and "HF_HUB_OFFLINE=1" in out["error"]
    assert run_dirs(project) == []


def test_a_hub_that_does_not_answer_is_refused_after_one_short_wait(project, root, tmp_path, hub):
    import time

    from loradeck.trainer.config import hub_model_family

    t0 = time.monotonic()
    out = child(CREATE, root, "someone/slow", hub_env(tmp_path, hub.url))
    assert time.monotonic() - t0 < hub_model_family.HEAD_SECONDS + 10  # one wait, no retries
    assert out["error"].startswith("the Hugging Face hub could not be reached to read base model someone/slow's")
    assert "Timeout" in out["error"] and len(hub.requests) == 1 and run_dirs(project) == []


def test_offline_mode_refuses_an_uncached_hub_id_without_asking_the_hub(project, root, tmp_path, hub):
    out = child(CREATE, root, "someone/sdxl", hub_env(tmp_path, hub.url, offline=True))
    assert "someone/sdxl is not in the Hugging Face cache" in out["error"] and "HF_HUB_OFFLINE" in out["error"]
    assert "hf download someone/sdxl" in out["error"]
    assert hub.requests == [] and run_dirs(project) == []


def test_resolving_a_config_never_asks_the_hub(project, root, tmp_path, hub):
    out = child(RESOLVE_ONLY, root, "someone/flux", hub_env(tmp_path, hub.url))
    assert out == {"resolved": None, "grain": None}
    assert hub.requests == []


def test_cli_train_on_a_flux_hub_id_says_so_in_one_line_and_makes_no_run(project, root, tmp_path, hub, cli):
    proc = cli("train", "toy", "--base-model", "someone/flux", "--steps", "1", root=root,
               env=hub_env(tmp_path, hub.url))
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: base model is a transformer model")
    assert run_dirs(project) == []
