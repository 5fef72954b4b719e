"""The estimator's activation term against what real models keep, on the CPU: the table for bench/RESULTS.md.

For each recipe of training/memory_recipes.py (a tiny Llama-shaped model with grouped-query
attention: h 64, MLP 160, 4 heads, 2 kv heads, 2 layers, vocabulary 96; LoRA r=4 on all linear
layers), gradient checkpointing off and on, and several sequence lengths (batch 2): what the
forward leaves for the backward (`memory_recipes.measured_kept_bytes`: autograd's saved
storages; with checkpointing, the CPU profiler's total after the forward) against
`estimate_memory(...).kept_after_forward_bytes`. The CPU runs PyTorch's flash kernel for every
dtype; `--math` forces SDPA's math kernel (what CUDA runs for fp32 attention with GQA).
tests/training/test_memory_measured.py asserts the same comparisons.

    python bench/memory_saved_tensors.py [--seq-lens 64,256,1024] [--math]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from calculators.architectures import Architecture  # noqa: E402
from calculators.memory import estimate_memory  # noqa: E402

TOY = Architecture("toy-gqa", "Toy GQA Llama", "llama", "llama", "LlamaForCausalLM", hidden_size=64,
                   intermediate_size=160, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                   vocab_size=96, max_position_embeddings=4096, tie_word_embeddings=False)
RECIPES = ("lora", "qlora", "qlora_noprep", "full", "full_bf16", "lora_autocast", "qlora_autocast")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seq-lens", default="64,256,1024")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--math", action="store_true", help="force SDPA's math kernel")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    import torch
    import transformers

    from training import memory_recipes as recipes

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    kernel = "math" if args.math else "flash"
    print(f"toy Llama (GQA), batch 2, LoRA r=4 all-linear, CPU, SDPA kernel: {kernel}\n")
    print("| recipe | checkpointing | seq | measured bytes | estimated bytes | error |")
    print("|---|---|---:|---:|---:|---:|")
    errors = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = recipes.save_random_model(TOY, Path(tmp))
        for recipe in args.recipes.split(","):
            for checkpointing in (False, True):
                torch.manual_seed(0)
                model = recipes.build_model(model_dir, recipe, checkpointing, r=4, lora_alpha=8)
                for seq_len in (int(s) for s in args.seq_lens.split(",")):
                    ids = torch.randint(0, TOY.vocab_size, (2, seq_len), generator=torch.Generator().manual_seed(seq_len))
                    measured = recipes.measured_kept_bytes(model, ids, recipe, checkpointing,
                                                           sdpa_backend="math" if args.math else None)
                    estimate = estimate_memory(TOY, batch_size=2, seq_len=seq_len, attention_kernel=kernel,
                                               **recipes.estimate_kwargs(recipe, 4, "all-linear", checkpointing))
                    error = 100 * (estimate.kept_after_forward_bytes - measured) / measured
                    errors.append(abs(error))
                    print(f"| {recipe} | {'on' if checkpointing else 'off'} | {seq_len:,} | {measured:,} | "
                          f"{estimate.kept_after_forward_bytes:,} | {error:+.2f} % |", flush=True)
    print(f"\nmax |error| {max(errors):.2f} % over {len(errors)} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
