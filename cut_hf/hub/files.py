"""Where a saved model's two files are: a local folder, a subfolder of a training output, or the Hub.

:func:`resolve_model_dir` turns what a user typed into a local folder holding ``config.json`` and
``model.safetensors``, or raises :class:`~cut_hf.errors.ModelLoadError` with one line. Hub
lookups are bounded: every request gets a short timeout, and an unreachable Hub is reported at
once (or answered from the cache) instead of being retried for a minute, which is what
``hf_hub_download`` does when its first metadata request fails and nothing is cached.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from huggingface_hub.errors import LocalEntryNotFoundError

from cut_hf.errors import ModelLoadError, hub_load_error, one_line

__all__ = ["DOWNLOAD_KWARGS", "HUB_TIMEOUT", "check_local_model_dir", "hub_error_message", "resolve_model_dir"]

#: Seconds one Hub metadata request may take before the Hub counts as unreachable.
HUB_TIMEOUT = 5.0

#: Keyword arguments of ``from_pretrained`` that steer the download rather than the model.
DOWNLOAD_KWARGS = ("revision", "cache_dir", "force_download", "token", "local_files_only", "timeout")

MODEL_FILES = ("config.json", "model.safetensors")


def check_local_model_dir(model_id: str | os.PathLike) -> Path | None:
    """If ``model_id`` looks like a local path, check it holds a complete model and return it.

    Returns ``None`` for things that look like Hub ids (``user/name``) and do not exist locally.
    Raises :class:`ModelLoadError` with a one-line reason for a missing or incomplete folder.
    """
    path = Path(model_id).expanduser()
    looks_local = path.exists() or str(model_id).startswith((".", "/", "~")) or str(model_id).count("/") > 1
    if not looks_local:
        return None
    if not path.exists():
        raise ModelLoadError(f"model folder {str(path)!r} does not exist")
    if not path.is_dir():
        raise ModelLoadError(f"{str(path)!r} is a file; pass the folder written by save_pretrained")
    missing = [f for f in MODEL_FILES if not (path / f).is_file()]
    if missing:
        raise ModelLoadError(f"model folder {str(path)!r} is incomplete: missing {', '.join(missing)}{_hint(path)}")
    return path


def _hint(path: Path) -> str:
    """For a training output folder: where its models are (its subfolders that hold a model)."""
    models = [p.name for p in sorted(path.iterdir()) if p.is_dir() and (p / "config.json").is_file()]
    if not models:
        return ""
    return f"; it holds models in {', '.join(f'{m}/' for m in models)}: pass e.g. {str(path / models[0])!r}"


def resolve_model_dir(model_id_or_dir: str | os.PathLike, subfolder: str | None = None, *,
                      fallback_subfolder: str | None = None, **download: Any) -> Path:
    """A local folder holding ``config.json`` + ``model.safetensors``.

    Args:
        model_id_or_dir: a ``save_pretrained`` folder, a folder with model subfolders (a
            ``train.py`` output: ``run/generator``), or a Hub id.
        subfolder: the model is there, inside the folder or Hub repository (and only there).
        fallback_subfolder: without ``subfolder``, where to look when the root holds no model
            (a model class's place in a training output folder).
        **download: ``revision``, ``cache_dir``, ``force_download``, ``token``,
            ``local_files_only`` and ``timeout`` (seconds per Hub request, :data:`HUB_TIMEOUT`).
    """
    path = Path(model_id_or_dir).expanduser()
    if subfolder and path.is_dir():
        path = path / subfolder
    elif (not subfolder and fallback_subfolder and path.is_dir() and not (path / "config.json").is_file()
          and (path / fallback_subfolder).is_dir()):
        path = path / fallback_subfolder  # a train.py output folder: OUTPUT/generator/ is the generator
    local = check_local_model_dir(path)
    if local is not None:
        return local
    places = (subfolder,) if subfolder else (None, fallback_subfolder) if fallback_subfolder else (None,)
    return _hub_snapshot_dir(str(model_id_or_dir), places, download)


def _hub_snapshot_dir(model_id: str, places: tuple[str | None, ...], download: dict[str, Any]) -> Path:
    """The cache folder holding both files of ``model_id`` in the first of ``places`` (subfolders;
    ``None`` is the root) that has them."""
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(model_id)
    except HFValidationError as err:
        raise hub_load_error(hub_error_message(model_id, err), err) from None
    first_error: Exception | None = None
    for sub in places:
        try:
            config_file = _hub_file(model_id, "config.json", sub, download)
            _hub_file(model_id, "model.safetensors", sub, download)
            return Path(config_file).parent  # both files lie in the same snapshot folder
        except _HubUnreachable as err:  # the subfolder would wait as long again
            raise hub_load_error(hub_error_message(model_id, err), err) from None
        except EntryNotFoundError as err:  # not at the root (remote) or not cached there: try the subfolder
            first_error = first_error or err
        except (OSError, ValueError) as err:  # every other Hub error is one of these
            raise hub_load_error(hub_error_message(model_id, err), err) from None
    assert first_error is not None
    raise hub_load_error(hub_error_message(model_id, first_error), first_error) from None


class _HubUnreachable(LocalEntryNotFoundError):
    """The Hub did not answer in time and no cached copy exists (what ``hf_hub_download`` raises then)."""


def _hub_file(repo_id: str, filename: str, subfolder: str | None, download: dict[str, Any]) -> str:
    """``hf_hub_download`` with a bounded first contact.

    ``hf_hub_download`` retries its metadata request with a 60 s timeout and back-off when the
    first one fails and no cached copy exists. One metadata request of our own, with a short
    timeout and no retry, finds an unreachable Hub first; the cached copy (if any) is used then.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url

    options = dict(download)
    timeout = float(options.pop("timeout", None) or HUB_TIMEOUT)
    if not (constants.is_offline_mode() or options.get("local_files_only")):
        url = hf_hub_url(repo_id, filename, subfolder=subfolder, revision=options.get("revision"))
        try:
            get_hf_file_metadata(url, token=options.get("token"), timeout=timeout)
        except Exception as err:  # sorted below: only network failures are handled here
            if not _is_network_error(err):
                raise
            cached = {k: v for k, v in options.items() if k in ("revision", "cache_dir", "token")}
            try:
                return hf_hub_download(repo_id, filename, subfolder=subfolder, local_files_only=True, **cached)
            except LocalEntryNotFoundError:
                raise _HubUnreachable(f"the Hub did not answer within {timeout:g} s ({one_line(err)})") from None
    return hf_hub_download(repo_id, filename, subfolder=subfolder, etag_timeout=timeout, **options)


def _is_network_error(err: BaseException) -> bool:
    """The Hub did not answer usefully: a connection failure, a time-out, or a busy / failing server
    (408, 429, 5xx). Then a cached copy is as good as the Hub's, as ``hf_hub_download`` also decides."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(err, HfHubHTTPError):
        status = getattr(getattr(err, "response", None), "status_code", None)
        return status in (408, 429) or (status is not None and status >= 500)
    # huggingface_hub's HTTP client raises its transport errors (connect, read time-out, protocol)
    # as subclasses of a class named TransportError; plain socket errors are OSErrors.
    names = {cls.__name__ for cls in type(err).__mro__}
    return "TransportError" in names or isinstance(err, (OSError, TimeoutError))


def hub_error_message(model_id: str, err: Exception) -> str:
    """One line saying why ``model_id`` could not be fetched from the Hub (or its cache)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    not_local = f"{model_id!r} is not a local folder"
    # Order matters: GatedRepoError is a RepositoryNotFoundError, and every HTTP error is an OSError.
    if isinstance(err, HFValidationError):
        return f"{not_local} and not a valid Hugging Face Hub id (expected 'user/name')"
    if isinstance(err, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        if constants.is_offline_mode():
            return f"{not_local} and is not in the Hugging Face cache; HF_HUB_OFFLINE=1 forbids downloading it"
        return (f"{not_local}, is not in the Hugging Face cache and the Hub could not be reached "
                "(check the id and your network connection)")
    if isinstance(err, GatedRepoError):
        return f"{model_id!r} is a gated Hub repository: accept its terms on the Hub and log in (`hf auth login`)"
    if isinstance(err, RepositoryNotFoundError):
        return (f"{not_local} and no Hub repository {model_id!r} exists "
                "(or it is private: log in with `hf auth login`)")
    if isinstance(err, RevisionNotFoundError):
        return f"Hub repository {model_id!r} has no such revision"
    if isinstance(err, RemoteEntryNotFoundError):
        return f"Hub repository {model_id!r} holds no cut-hf model (config.json / model.safetensors missing)"
    return f"could not download {model_id!r} from the Hugging Face Hub: {one_line(err)}"
