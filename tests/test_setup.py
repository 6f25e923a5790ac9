import json
import os
import re
import signal
import socket
import subprocess
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
import torch
import yaml

from lorakit.config import RunConfig
from lorakit.devices import device

ROOT = Path(__file__).resolve().parent.parent
CONDA_TO_PIP = {"pytorch": "torch"}  # conda package names that differ from PyPI's


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_names_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {CONDA_TO_PIP.get(_name(d), _name(d)) for d in env["dependencies"] if isinstance(d, str)}
    conda -= {"python", "pip"}
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip_section[-1] == "-e .[dev]", "the conda route installs the kit itself through pip"
    conda |= {_name(p) for p in pip_section[:-1]}  # packages only PyPI has
    assert conda == wanted, f"only in environment.yml: {conda - wanted}; only in pyproject: {wanted - conda}"


def _pins(name: str) -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in (ROOT / name).read_text().splitlines()]
    return {_name(line): line.split("==")[1] for line in lines if "==" in line}


def test_version_ranges_state_what_is_tested_and_nothing_wider():
    project = {_name(r): r for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    env = {CONDA_TO_PIP.get(_name(d), _name(d)): d.split("#")[0].strip()
           for d in yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"] if isinstance(d, str)}
    old, new = _pins("constraints-compat.txt"), _pins("constraints.txt")
    for package in ("diffusers", "transformers", "peft"):
        spec = f"{package}>={old[package]},<={new[package]}"
        assert project[package] == spec and env[package] == spec, f"{package}: tested {old[package]} and {new[package]}"
    assert "torch" not in old and project["torch"] == "torch>=2.13,<2.14" and new["torch"].startswith("2.13.")


def test_torch_pin_lives_in_one_constraints_file():
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text()
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text()
    for other in ("pyproject.toml", "Makefile", "environment.yml", ".ci/run"):
        assert "2.13.0" not in (ROOT / other).read_text(), f"{other} repeats the torch pin"


def test_quick_mode_picks_small_sizes():
    assert RunConfig(quick=True).pick(full=500, quick=5) == 5
    assert RunConfig(quick=False).pick(full=500, quick=5) == 500
    assert RunConfig(quick=True).mode == "quick"


def test_device_prefers_accelerators_and_honours_a_choice():
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert device().type == expected
    assert device("cpu") == torch.device("cpu")


def test_network_is_blocked_loudly():
    with pytest.raises(RuntimeError, match="offline"):
        socket.create_connection(("huggingface.co", 443), timeout=2)
    with pytest.raises(RuntimeError, match="offline"):
        socket.socket().connect(("93.184.216.34", 80))
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "jupyter").exists(), reason="needs the .venv that `make lab` creates")
def test_make_lab_serves_the_notebooks():
    """`make lab` starts JupyterLab on notebooks/; here headless, then it is stopped."""
    port, token = _free_port(), "lorakit-test"
    args = f"--no-browser --ip=127.0.0.1 --port={port} --IdentityProvider.token={token}"
    proc = subprocess.Popen(["make", "-s", "lab", f"LAB_ARGS={args}"], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/api/contents/00_setup_and_tour.ipynb?token={token}&content=0"
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert proc.poll() is None, "make lab exited early"
                assert time.time() < deadline, "JupyterLab did not answer within 90 s"
                time.sleep(1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=10) as response:
            assert b"JupyterLab" in response.read()
        # no news pop-up and no update check in a room without internet: the environment's defaults say so
        settings = f"http://127.0.0.1:{port}/lab/api/settings/@jupyterlab/apputils-extension:notification?token={token}"
        with urllib.request.urlopen(settings, timeout=10) as response:
            schema = json.loads(response.read())["schema"]["properties"]
        assert schema["fetchNews"]["default"] == "false" and schema["checkForUpdates"]["default"] is False
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:  # it had already exited (the assertion above says why)
            pass
        proc.wait(timeout=30)
