"""Facts about the lab's task data set (data/reviews), for the prose.

The calculators cannot read the repository's data folder (they also run in the browser),
so the split sizes are recorded here; tests/calculators/test_lab_task.py checks them
against the JSONL files, so they cannot drift.
"""

from __future__ import annotations

LAB_TASK_EXAMPLES: dict[str, int] = {"train": 384, "test": 96}
LAB_TASK_LABELS: tuple[str, ...] = ("negative", "neutral", "positive")


def lab_examples(split: str) -> int:
    """Examples in one split of the reviews task."""
    if split not in LAB_TASK_EXAMPLES:
        raise ValueError(f"split: must be one of {sorted(LAB_TASK_EXAMPLES)}, got {split!r}")
    return LAB_TASK_EXAMPLES[split]
