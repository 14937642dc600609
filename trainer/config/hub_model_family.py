"""The architecture of a hub model whose configs are not in the HF cache yet, read when a run is created.

model_family.detect never touches the network (configs are resolved on every train-form edit), so a
hub id it has not seen is `None` there. Creating a run (loradeck.trainer.runs.lifecycle) calls `fetch`:
model_index.json and unet/config.json are downloaded with hf_hub_download, into the same HF cache the
loader reads later (HF_HOME / HF_HUB_CACHE, HF_ENDPOINT and the user's token honoured), and classified by
model_family's rules. An SD 2.x, SD3 or Flux id is then refused before its run folder exists.

Each failure is one ModelError line with a hint: offline mode, the hub out of reach, a repo that is not
there (or private), a gated repo, a repo that is not a diffusers SD model. It stays quick: a TCP probe
(loradeck.trainer.hub_access), one HEAD without retries, and only then huggingface_hub's own downloader,
whose retries (about half a minute against a dead hub) a hub that just answered never meets.
"""

from __future__ import annotations

from pathlib import Path

from loradeck.trainer import hub_access
from loradeck.trainer.config import model_family
from loradeck.trainer.errors import ModelError

INDEX, UNET = "model_index.json", "unet/config.json"
# The one HEAD that decides whether the hub answers at all (huggingface_hub's own default is 10 s).
HEAD_SECONDS = 5.0
LOGIN = "log in with `hf auth login` or set HF_TOKEN"


def _local_choice(repo_id: str) -> str:
    return (f"download it where there is network (hf download {repo_id}) and set HF_HUB_OFFLINE=1 here, or point"
            " --base-model at a local folder or .safetensors file")


def fetch(repo_id: str, revision: str | None = None) -> str:
    """sd1 | sdxl of hub model `repo_id`, its configs fetched into the HF cache; ModelError otherwise."""
    from huggingface_hub import constants  # huggingface_hub: only when a run names an uncached hub model

    if constants.HF_HUB_OFFLINE:
        raise ModelError(f"base model {repo_id} is not in the Hugging Face cache (no {UNET}) and offline mode is"
                         f" on ({hub_access.offline_variable() or 'HF_HUB_OFFLINE'})",
                         hint=f"download it first (hf download {repo_id}), unset the offline switch, or point"
                              " --base-model at a local folder or .safetensors file")
    reason = hub_access.unreachable_reason()
    if reason:
        raise _unreachable(repo_id, reason)
    files = _download(repo_id, revision)
    if not files:
        raise _not_diffusers(repo_id, "neither")
    folder = files[0].parent if files[0].name == INDEX else files[0].parent.parent
    family = model_family.from_folder(folder)  # refuses SD 2.x, SD3, Flux, a refiner, ...
    if family is None:
        raise _not_diffusers(repo_id, UNET)
    return family


def _download(repo_id: str, revision: str | None) -> list[Path]:
    """The configs the repo has (model_index.json first), each in the HF cache; refusals as ModelError."""
    import huggingface_hub  # only when a run names an uncached hub model
    from huggingface_hub.errors import EntryNotFoundError  # the one answer that is not a refusal

    try:  # no retries: a hub that is down or stalls is reported now, not after huggingface_hub's back-off
        huggingface_hub.get_hf_file_metadata(huggingface_hub.hf_hub_url(repo_id, INDEX, revision=revision),
                                             timeout=HEAD_SECONDS)
        names = [INDEX, UNET]
    except EntryNotFoundError:
        names = [UNET]  # no pipeline index: the UNet config alone may still say what it is
    except Exception as e:  # noqa: BLE001 - huggingface_hub and its HTTP client raise many types
        raise _refusal(repo_id, e) from None
    found = []
    for name in names:
        try:
            found.append(Path(huggingface_hub.hf_hub_download(repo_id, name, revision=revision,
                                                              etag_timeout=HEAD_SECONDS)))
        except EntryNotFoundError:
            continue
        except Exception as e:  # noqa: BLE001
            raise _refusal(repo_id, e) from None
        if name == INDEX and "transformer" in (model_family.read_json(found[-1]) or {}):
            break  # SD3, Flux: no UNet to fetch, from_folder refuses it from the index
    return found


def _refusal(repo_id: str, error: Exception) -> ModelError:
    """One line for a failed hub request."""
    from huggingface_hub import errors  # only when a request failed

    if isinstance(error, errors.GatedRepoError):
        return ModelError(f"base model {repo_id} is gated on the Hugging Face hub and this machine may not read it",
                          hint=f"accept its terms on its page of the hub, then {LOGIN}")
    if isinstance(error, errors.RepositoryNotFoundError):
        return ModelError(f"base model {repo_id} was not found on the Hugging Face hub (or it is private)",
                          hint=f"check the id; for a private model {LOGIN}")
    if isinstance(error, errors.RevisionNotFoundError):
        return ModelError(f"base model {repo_id}: that revision is not on the Hugging Face hub",
                          hint="check the revision (a branch, tag or commit of the repo)")
    status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(error, errors.HfHubHTTPError) and status in (401, 403):
        return ModelError(f"the Hugging Face hub refused access to base model {repo_id} (HTTP {status})",
                          hint=f"{LOGIN}, with a token that may read it")
    if isinstance(error, errors.HfHubHTTPError) and status is not None:
        return ModelError(f"the Hugging Face hub answered HTTP {status} for base model {repo_id}",
                          hint=f"try again later, or {_local_choice(repo_id)}")
    first = str(error).splitlines()[0][:160] if str(error) else ""
    return _unreachable(repo_id, f"{type(error).__name__}: {first}" if first else type(error).__name__)


def _unreachable(repo_id: str, reason: str) -> ModelError:
    return ModelError(f"the Hugging Face hub could not be reached to read base model {repo_id}'s configs"
                      f" ({reason})", hint=f"check the network or HF_ENDPOINT, or {_local_choice(repo_id)}")


def _not_diffusers(repo_id: str, missing: str) -> ModelError:
    what = f"neither {INDEX} nor {UNET}" if missing == "neither" else f"no {UNET}"
    return ModelError(f"base model {repo_id} has {what} on the Hugging Face hub: not a diffusers Stable Diffusion"
                      f" model ({model_family.SUPPORTED})",
                      hint="a repo with one checkpoint file: download the .safetensors file and point --base-model"
                           " at it")
