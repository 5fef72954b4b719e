"""Our exported adapter loads in peft (`PeftModel.from_pretrained`) and reproduces our outputs."""

from __future__ import annotations

import json
import zipfile

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from safetensors.torch import load_file  # noqa: E402

from training.data import encode  # noqa: E402
from training.export import zip_adapter  # noqa: E402
from training.layers import LoRALinear  # noqa: E402
from training.model import load_model  # noqa: E402
from training.run import RunSummary, TrainConfig, prepare, train  # noqa: E402


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_peft_loads_our_adapter_and_reproduces_logits(tmp_path, method, small_data):
    config = TrainConfig(method=method, r=4, lora_alpha=8, steps=2, batch_size=4, seq_len=16, seed=2, lr=1e-2)
    data = small_data
    events = list(train(config, output_dir=tmp_path / "adapter", data=data, device="cpu"))
    summary = events[-1]
    assert isinstance(summary, RunSummary) and summary.adapter_dir == tmp_path / "adapter"

    saved = json.loads((summary.adapter_dir / "adapter_config.json").read_text())
    assert saved["peft_type"] == "LORA" and saved["r"] == 4 and saved["use_dora"] == (method == "dora")
    assert saved["target_modules"] == ["query", "value"] and saved["modules_to_save"] == ["classifier"]
    keys = set(load_file(summary.adapter_dir / "adapter_model.safetensors"))
    assert "base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight" in keys
    assert ("base_model.model.bert.encoder.layer.5.attention.self.value.lora_magnitude_vector" in keys) == (method == "dora")
    assert "base_model.model.classifier.weight" in keys

    # our trained model, rebuilt from the adapter file (same base, same seed, weights loaded)
    ours, _, _ = prepare(config, None, data, torch.device("cpu"))
    state = load_file(summary.adapter_dir / "adapter_model.safetensors")
    missing = ours.model.load_state_dict({k.removeprefix("base_model.model."): v for k, v in state.items()}, strict=False)
    assert not missing.unexpected_keys
    # peft on a fresh base whose head is re-initialised with another seed: the adapter must restore it
    fresh = load_model(data.num_labels, seed=99)
    theirs = peft.PeftModel.from_pretrained(fresh.model, summary.adapter_dir)

    batch = encode(ours.tokenizer, data.test_texts[:8], data.test_labels[:8], config.seq_len)
    batch.pop("labels")
    ours.model.eval(), theirs.eval()
    with torch.no_grad():
        torch.testing.assert_close(theirs(**batch).logits, ours.model(**batch).logits, rtol=1e-5, atol=1e-5)
    any_b = next(m for m in ours.model.modules() if isinstance(m, LoRALinear)).lora_B.weight
    assert torch.count_nonzero(any_b) > 0  # the comparison exercised a non-zero adapter

    archive = zip_adapter(summary.adapter_dir, tmp_path / "adapter.zip")
    assert sorted(zipfile.ZipFile(archive).namelist()) == ["adapter_config.json", "adapter_model.safetensors"]
