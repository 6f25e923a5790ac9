"""Where the kit's files live, and the rules every writer follows so that nothing a user made is lost.

- Shipped weights live in data/ (the tiny pipeline, the classifier, the concept adapters). Commands
  never write there unless told to with an explicit path *and* an overwrite flag.
- What commands and notebooks make while they run goes under runs/ at the repository root
  (ignored by git), whatever the current directory: relative work paths resolve against the
  repository, so a notebook started from notebooks/ does not grow a second runs/ there.
- A file is written atomically (temporary file, then rename); a folder is built beside its target
  and swapped in; the version it replaces is moved aside first and removed only once the new one
  is in place (for shipped data it is kept under runs/replaced/).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
CLASSIFIER_PATH = DATA_DIR / "classifier.safetensors"
PIPELINE_DIR = DATA_DIR / "tiny-sd"
ADAPTERS_DIR = DATA_DIR / "adapters"  # the shipped concept adapters (notebook 05)
# What notebooks and commands write while they run; not committed. LORAKIT_RUNS moves it (`make test` gives
# each of its parallel workers its own, so that a notebook and its student edition never share checkpoints).
RUNS_DIR = Path(os.environ.get("LORAKIT_RUNS", "").strip() or REPO_ROOT / "runs").resolve()
REPLACED_DIR = RUNS_DIR / "replaced"  # earlier versions of shipped files that an --overwrite replaced


class OutputExistsError(FileExistsError):
    """A write that would replace or delete something the user has, refused before anything changed."""


def repo_path(path: str | Path) -> Path:
    """An absolute path; a relative one is taken from the repository root, not the current directory."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def base_checkpoint_dir() -> Path | None:
    """The real SD 1.5 folder the LORAKIT_BASE setting names (chapters 02-07 and notebook 09), or None when unset.

    Weights cannot be downloaded here: point it at a local copy of stable-diffusion-v1-5 (a folder
    with model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/).
    """
    value = os.environ.get("LORAKIT_BASE", "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(f"LORAKIT_BASE={value!r} is not a pipeline folder (no model_index.json there): set it "
                                "to a local stable-diffusion-v1-5 folder, or unset it for the shipped tiny model")
    return path


def base_pipeline_dir() -> Path:
    """The pipeline every chapter loads: the LORAKIT_BASE folder when it is set, else the shipped tiny model."""
    return base_checkpoint_dir() or PIPELINE_DIR


def concept_adapters_dir() -> Path:
    """The concept adapters notebook 05 mixes: the shipped ones (data/adapters) for the tiny model; for a LORAKIT_BASE
    model, runs/adapters-<its folder name>, which `python -m lorakit train-adapters` fills when LORAKIT_BASE is set."""
    base = base_checkpoint_dir()
    return ADAPTERS_DIR if base is None else RUNS_DIR / f"adapters-{base.name}"


def is_shipped(path: str | Path) -> bool:
    """True for files and folders inside data/ (the weights every notebook depends on)."""
    try:
        Path(path).resolve().relative_to(DATA_DIR.resolve())
        return True
    except ValueError:
        return False


def _listing(folder: Path, limit: int = 5) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_output_folder(path: str | Path, is_own: Callable[[Path], bool], what: str, overwrite: bool,
                        flag: str = "overwrite=True") -> Path:
    """Check that a folder may be written by a command that makes `what`; raise before anything changes.

    A missing or empty folder is fine. A folder that `is_own` recognises as one of the command's
    own outputs needs `overwrite`. Anything else (a file, or a folder holding other things) is
    refused whatever the flag, naming what is there, so that a mistyped path can never wipe it.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"{path} is a file, not a folder; give a new folder path for the {what}")
    if not path.exists() or not any(path.iterdir()):
        return path
    if not is_own(path):
        raise OutputExistsError(
            f"{path} already holds other files ({_listing(path)}) and is not a {what}; nothing was changed. "
            f"Give a new or empty folder for the {what} (e.g. under {RUNS_DIR})")
    if not overwrite:
        raise OutputExistsError(
            f"{path} already holds a {what}; nothing was changed. Pass {flag} to replace it "
            f"(the old one is removed only after the new one is written), or give a new folder")
    return path


def check_output_file(path: str | Path, overwrite: bool, what: str = "file", flag: str = "overwrite=True",
                      is_own: Callable[[Path], bool] | None = None) -> Path:
    """Check that a file may be written at `path`: refuse a folder there, and an existing file without `overwrite`.

    With `is_own`, an existing file that is not one of the writer's own kind is refused whatever the flag.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputExistsError(f"{path} is a folder; give a file path for the {what}, e.g. {path / 'out.safetensors'}")
    if path.exists() and is_own is not None and not is_own(path):
        raise OutputExistsError(f"{path} exists and is not a {what}; nothing was changed. Give a new file name")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; nothing was changed. Pass {flag} to replace it, "
                                "or give a new file name")
    return path


def _aside(path: Path) -> Path:
    """Where the version of `path` being replaced waits: runs/replaced/ for shipped data, else beside it."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if is_shipped(path):
        REPLACED_DIR.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=REPLACED_DIR, prefix=f"{path.name}-{stamp}-")) / path.name
    return Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.previous-")) / path.name


def swap_in(new: Path, path: Path) -> Path | None:
    """Put `new` (a file or folder beside `path`) in place of `path`; returns where a shipped old version was kept.

    The old version is moved aside first and deleted only after the new one is in place; for
    shipped data (data/) it is kept under runs/replaced/ so a mistaken overwrite can be undone.
    """
    kept = None
    old = None
    if path.exists():
        old = _aside(path)
        shutil.move(str(path), str(old))
    try:
        os.replace(new, path)
    except BaseException:
        if old is not None:  # put the old version back
            shutil.move(str(old), str(path))
            shutil.rmtree(old.parent, ignore_errors=True)
        raise
    if old is not None:
        if is_shipped(path):
            kept = old
        else:
            shutil.rmtree(old.parent, ignore_errors=True)
    return kept


def _writable_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PermissionError(f"cannot create the folder for {path}: {err.strerror}; choose another location") from err
    if not path.parent.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {path.parent} is not a folder")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary file next to `path` to write; it replaces `path` only if the block succeeds.

    A shipped file (in data/) that is replaced is kept under runs/replaced/ first.
    Errors name `path`, never the hidden temporary file: writing onto a folder, or into a folder
    that cannot be written, is explained in the user's terms.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file path to write, e.g. {path / 'lora.safetensors'}")
    _writable_parent(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise PermissionError(f"cannot write {path}: the folder {path.parent} is not writable ({err.strerror}); "
                              "choose another location") from err
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        if is_shipped(path) and path.is_file():  # a shipped file is kept, not lost
            shutil.copy2(path, _aside(path))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """A temporary folder next to `path` to fill; `swap_in` puts it in place only if the block succeeds."""
    path = Path(path)
    _writable_parent(path)
    try:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    except OSError as err:
        raise PermissionError(f"cannot write {path}: the folder {path.parent} is not writable ({err.strerror})") from err
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _json_safe(value: object) -> object:
    """Replace NaN and infinities (not valid JSON) by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def json_text(value: object, indent: int = 2, sort_keys: bool = False) -> str:
    """Strict JSON text of a value (NaN and infinities written as null), ending in a newline."""
    return json.dumps(_json_safe(value), indent=indent, sort_keys=sort_keys, allow_nan=False, ensure_ascii=False) + "\n"
