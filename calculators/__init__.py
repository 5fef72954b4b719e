"""The maths of LoRA Lab: the single source of truth for every number in the book.

Pure Python and numpy (no torch, no web framework), so the same package runs on the server
and, under Pyodide, in the reader's browser. Modules: architectures (model shapes), params
(trainable counts), memory (VRAM estimates), gpus, nf4 (4-bit quantization), lowrank (SVD),
scaling (α/r, rsLoRA, LoRA+), rank_sweep (α/r measured with Adam and SGD), serving (many adapters
on one base), preference (DPO/GRPO memory), selective (Spectrum-style layer selection), usual_figures
(the arithmetic behind tutorials' figures), quantities (the named numbers chapters cite).
"""

__all__ = ["architectures", "gpus", "lowrank", "memory", "nf4", "params", "preference", "quantities", "rank_sweep",
           "scaling", "selective", "serving", "usual_figures"]
