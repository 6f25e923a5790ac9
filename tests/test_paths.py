"""The writing rules every command follows: refuse before changing, atomic writes, shipped data kept."""

import json
import tempfile

import pytest

from conftest import snapshot
from lorakit import paths
from lorakit.paths import (
    OutputExistsError,
    atomic_path,
    check_output_file,
    check_output_folder,
    repo_path,
    swap_in,
)


def _never_own(path):
    return False


def test_relative_work_paths_start_at_the_repository_not_the_current_folder(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert repo_path("runs/pretrain") == paths.REPO_ROOT / "runs" / "pretrain"
    assert repo_path(tmp_path / "x") == tmp_path / "x"


def test_a_folder_with_other_files_is_refused_whatever_the_flag(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "sub").mkdir()
    before = snapshot(tmp_path)
    for overwrite in (False, True):
        with pytest.raises(OutputExistsError, match=r"notes.txt, sub/.*nothing was changed"):
            check_output_folder(tmp_path, _never_own, "pipeline folder", overwrite)
    assert snapshot(tmp_path) == before


def test_an_own_folder_needs_the_flag_and_new_or_empty_ones_do_not(tmp_path):
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "model_index.json").write_text("{}")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        check_output_folder(tmp_path / "own", lambda p: True, "pipeline folder", False, flag="--overwrite")
    assert check_output_folder(tmp_path / "own", lambda p: True, "pipeline folder", True)
    (tmp_path / "empty").mkdir()
    assert check_output_folder(tmp_path / "empty", _never_own, "x", False)
    assert check_output_folder(tmp_path / "new", _never_own, "x", False)
    (tmp_path / "file").write_text("a file")
    with pytest.raises(OutputExistsError, match="is a file"):
        check_output_folder(tmp_path / "file", _never_own, "x", True)


def test_existing_files_need_the_flag_and_folders_are_not_files(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"old")
    with pytest.raises(OutputExistsError, match="already exists"):
        check_output_file(tmp_path / "a.bin", overwrite=False)
    assert check_output_file(tmp_path / "a.bin", overwrite=True)
    with pytest.raises(OutputExistsError, match="is a folder"):
        check_output_file(tmp_path, overwrite=True)


def test_atomic_path_names_the_users_path_not_the_temp_file(tmp_path, monkeypatch):
    with pytest.raises(IsADirectoryError, match=f"{tmp_path} is a folder"):
        with atomic_path(tmp_path):
            pass

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / ".x.safetensors.abc.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)  # a read-only folder (root ignores chmod, so simulate it)
    with pytest.raises(PermissionError, match="not writable") as err:
        with atomic_path(tmp_path / "x.safetensors"):
            pass
    assert str(tmp_path / "x.safetensors") in str(err.value) and ".tmp" not in str(err.value)


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "f.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.json"]


@pytest.fixture
def fake_data(tmp_path, monkeypatch):
    """data/ and runs/ in a temporary folder, so that replacing 'shipped' files is tested safely."""
    data, runs = tmp_path / "data", tmp_path / "runs"
    data.mkdir()
    monkeypatch.setattr(paths, "DATA_DIR", data)
    monkeypatch.setattr(paths, "REPLACED_DIR", runs / "replaced")
    return data


def test_replacing_a_shipped_file_keeps_the_old_one(fake_data):
    shipped = fake_data / "classifier.safetensors"
    shipped.write_bytes(b"shipped weights")
    with atomic_path(shipped) as tmp:
        tmp.write_bytes(b"new weights")
    assert shipped.read_bytes() == b"new weights"
    kept = list((fake_data.parent / "runs" / "replaced").rglob("classifier.safetensors"))
    assert len(kept) == 1 and kept[0].read_bytes() == b"shipped weights"


def test_swap_in_keeps_a_shipped_folder_and_drops_other_old_versions(fake_data, tmp_path):
    shipped = fake_data / "tiny-sd"
    shipped.mkdir()
    (shipped / "model_index.json").write_text(json.dumps({"v": 1}))
    new = fake_data / ".tiny-sd.tmp"
    new.mkdir()
    (new / "model_index.json").write_text(json.dumps({"v": 2}))
    kept = swap_in(new, shipped)
    assert json.loads((shipped / "model_index.json").read_text()) == {"v": 2}
    assert json.loads((kept / "model_index.json").read_text()) == {"v": 1}
    elsewhere = tmp_path / "mine"
    elsewhere.mkdir()
    (tmp_path / "mine2").mkdir()
    assert swap_in(tmp_path / "mine2", elsewhere) is None
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("mine", ".mine"))) == ["mine"]
