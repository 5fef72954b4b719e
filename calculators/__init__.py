"""The maths of LoRA Lab: the single source of truth for every number in the book.

Pure Python and numpy (no torch, no web framework), so the same package runs on the server
and, under Pyodide, in the reader's browser. Modules: architectures (model shapes), params
(trainable counts), memory (VRAM estimates), gpus, nf4 (4-bit quantization), lowrank (SVD),
scaling (α/r, rsLoRA, LoRA+), quantities (the named numbers chapters cite).
"""

__all__ = ["architectures", "gpus", "lowrank", "memory", "nf4", "params", "quantities", "scaling"]
