"""The recorded facts about the lab's data set match the shipped files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from calculators.lab_task import lab_examples

DATA = Path(__file__).resolve().parents[2] / "data" / "lora_config"


@pytest.mark.parametrize("split", ["train", "test"])
def test_split_sizes_match_the_files(split):
    rows = [json.loads(line) for line in (DATA / f"{split}.jsonl").read_text().splitlines() if line.strip()]
    assert lab_examples(split) == len(rows)
    assert all(set(row) == {"prompt", "answer"} and row["answer"].startswith("LoraConfig(") for row in rows)


def test_unknown_split_names_the_field():
    with pytest.raises(ValueError, match="^split:"):
        lab_examples("validation")
