"""Common training GPUs and how much memory each one has.

NVIDIA quotes GPU memory in "GB" that are binary: an RTX 3090's 24 GB are twelve 2 GiB
GDDR6X chips, 24 × 2^30 bytes. `memory_bytes` is that nominal size. `usable_bytes` is what
`nvidia-smi` reports as the board total (ECC on where the card has it, as shipped), which is
what the driver can hand out: the CUDA context then comes out of it, and the estimator counts
that context separately. The H200's "141 GB" is the one nominal figure that is not a round
number of GiB; we take 141 GiB, and nvidia-smi shows 143,771 MiB (≈ 140.4 GiB).

Sources: NVIDIA product pages (nominal); nvidia-smi totals as commonly reported for each
board (they move by a few hundred MiB with the driver and the ECC setting; treat as ±1 %).
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 2**20
GIB = 2**30


@dataclass(frozen=True)
class Gpu:
    """One GPU model: its nominal memory and what nvidia-smi reports as usable."""

    slug: str
    name: str
    memory_bytes: int  # nominal ("24 GB" = 24 GiB)
    usable_bytes: int  # nvidia-smi's total for the board
    note: str = ""

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


GPUS: tuple[Gpu, ...] = (
    Gpu("t4", "Tesla T4 16 GB", 16 * GIB, 15_360 * MIB, "Colab's free tier; no bf16 (use fp16)"),
    Gpu("rtx-3090", "RTX 3090 24 GB", 24 * GIB, 24_576 * MIB),
    Gpu("rtx-4090", "RTX 4090 24 GB", 24 * GIB, 24_564 * MIB),
    Gpu("l4", "L4 24 GB", 24 * GIB, 23_034 * MIB),
    Gpu("rtx-a6000", "RTX A6000 48 GB", 48 * GIB, 49_140 * MIB),
    Gpu("l40s", "L40S 48 GB", 48 * GIB, 46_068 * MIB, "ECC on"),
    Gpu("a100-40gb", "A100 40 GB", 40 * GIB, 40_960 * MIB),
    Gpu("a100-80gb", "A100 80 GB", 80 * GIB, 81_920 * MIB),
    Gpu("h100-80gb", "H100 80 GB", 80 * GIB, 81_559 * MIB),
    Gpu("h200-141gb", "H200 141 GB", 141 * GIB, 143_771 * MIB),
)

GPUS_BY_SLUG: dict[str, Gpu] = {gpu.slug: gpu for gpu in GPUS}


def get_gpu(gpu: str | Gpu) -> Gpu:
    """Look a GPU up by slug (e.g. 'h100-80gb'); ValueError names `gpu` and the choices."""
    if isinstance(gpu, Gpu):
        return gpu
    found = GPUS_BY_SLUG.get(str(gpu).lower())
    if found is None:
        raise ValueError(f"gpu: unknown GPU {gpu!r}; choose from {', '.join(GPUS_BY_SLUG)}")
    return found
