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


def test_the_chapters_lab_quantities_are_the_apps_numbers(lab_model_dir):
    from dataclasses import replace

    from app.lab import TrainRequest, lab_model, predict_run
    from app.settings import Settings
    from calculators.quantities import evaluate

    defaults = TrainRequest()
    for field in ("rank", "alpha", "steps", "batch_size", "lr", "seed"):
        assert evaluate("lab_default", {"field": field}).value == getattr(defaults, field)
    with pytest.raises(ValueError, match="^field:"):
        evaluate("lab_default", {"field": "epochs"})
    shape = {key: evaluate("config_value", {"model": "smollm2-135m", "key": key}).value
             for key in ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim")}
    assert shape == {"num_hidden_layers": 30, "hidden_size": 576, "num_attention_heads": 9, "num_key_value_heads": 3,
                     "head_dim": 64}
    # the chapter's predicted CPU accounting is the one the lab shows for a default run's widest batch
    model = lab_model(replace(Settings(), model_cache_dir=lab_model_dir))
    for precision, autocast in (("bf16", True), ("fp32", False)):
        predicted = predict_run(defaults, model, on_gpu=False, autocast=autocast)
        assert evaluate("lab_accounted_bytes", {"model": "smollm2-135m", "method": "lora", "r": "8", "targets": "q,v",
                                                "batch": "8", "precision": precision}).value == predicted["accounted_bytes"]
    assert evaluate("lab_accounted_bytes", {"model": "smollm2-135m", "method": "lora", "r": "8", "targets": "q,v",
                                            "batch": "8"}).value == predict_run(defaults, model, False, autocast=True)["accounted_bytes"]
    with pytest.raises(ValueError, match="^precision:"):
        evaluate("lab_accounted_bytes", {"model": "smollm2-135m", "method": "lora", "r": "8", "targets": "q,v",
                                         "batch": "8", "precision": "fp16"})
