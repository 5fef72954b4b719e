"""What the lab measures on a CPU against what the book's estimator predicts for the same terms.

The lab counts parameters, gradients, optimizer state and every tensor autograd saved (each
storage once); app.lab.predict_run predicts those terms from the shapes alone
(calculators.lab_task.accounted_bytes). A real step of the real model, per method and precision.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")

from app.lab import TrainRequest, lab_model, predict_run  # noqa: E402
from app.settings import Settings  # noqa: E402
from training.task import ChatTask  # noqa: E402
from training.run import TrainConfig, train  # noqa: E402


@pytest.mark.parametrize(("method", "precision"), [("lora", "bf16"), ("qlora", "bf16"), ("dora", "fp32")])
def test_measured_memory_is_within_ten_percent_of_the_prediction(lab_model_dir, small_task, method, precision):
    task = ChatTask("one-batch", small_task.system_prompt, small_task.train, small_task.test[:1])
    request = TrainRequest(method=method, steps=1)
    config = TrainConfig(**{**request.training_config(), "target_modules": (), "max_new_tokens": 2,
                            "sample_every": 0, "precision": precision})
    summary = list(train(config, lab_model_dir, task=task, device="cpu"))[-1]
    assert summary.autocast == ("bf16" if precision == "bf16" else "off")
    model = lab_model(replace(Settings(), model_cache_dir=lab_model_dir))
    predicted = predict_run(request, model, on_gpu=False, seq_len=summary.max_batch_tokens,
                            autocast=precision == "bf16")["accounted_bytes"]
    assert abs(summary.peak_memory_bytes / predicted - 1) < 0.10, (summary.peak_memory_bytes, predicted)
