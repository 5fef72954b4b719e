"""Our exported adapter loads in peft (`PeftModel.from_pretrained`) onto the cached SmolLM2 and
gives exactly the greedy answers the server reported."""

from __future__ import annotations

import json
import zipfile

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from safetensors.torch import load_file  # noqa: E402

from training.export import zip_adapter  # noqa: E402
from training.generate import greedy_answers  # noqa: E402
from training.run import TrainConfig, train  # noqa: E402

BASE_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _train(method, lab_model_dir, small_task, out, **extra):
    config = TrainConfig(method=method, r=4, lora_alpha=8, steps=2, batch_size=2, lr=1e-2, seed=2,
                         max_new_tokens=24, sample_every=0, **extra)
    return list(train(config, lab_model_dir, output_dir=out, task=small_task, device="cpu"))[-1]


def _fresh_base(lab_model_dir):
    """The base as a float32 transformers model, as a reader's from_pretrained gives it (our cache
    packs its weights: read_model unpacks them to the same float32 numbers)."""
    from training.model import read_model

    return read_model(lab_model_dir)


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_peft_reproduces_the_servers_greedy_answers(tmp_path, method, lab_model_dir, small_task):
    adapter = tmp_path / "adapter"
    summary = _train(method, lab_model_dir, small_task, adapter, target_modules=("q_proj", "v_proj", "down_proj"))

    saved = json.loads((adapter / "adapter_config.json").read_text())
    assert saved["peft_type"] == "LORA" and saved["task_type"] == "CAUSAL_LM"
    assert saved["base_model_name_or_path"] == BASE_ID and saved["r"] == 4
    assert saved["use_dora"] == (method == "dora") and saved["modules_to_save"] is None
    assert saved["target_modules"] == ["q_proj", "v_proj", "down_proj"]
    keys = set(load_file(adapter / "adapter_model.safetensors"))
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys
    assert ("base_model.model.model.layers.29.mlp.down_proj.lora_magnitude_vector" in keys) == (method == "dora")
    assert len(keys) == 30 * 3 * (3 if method == "dora" else 2)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(lab_model_dir, local_files_only=True)
    theirs = peft.PeftModel.from_pretrained(_fresh_base(lab_model_dir), adapter).eval()
    prompts = [s["prompt"] for s in summary.samples]
    answers = greedy_answers(theirs, tokenizer, small_task.system_prompt, prompts, max_new_tokens=24, batch_size=8)
    assert answers == [s["after"] for s in summary.samples]
    assert answers != [s["before"] for s in summary.samples]  # the adapter changed what the model says
    lora_b = [p for n, p in theirs.named_parameters() if "lora_B" in n]
    assert lora_b and all(torch.count_nonzero(p) > 0 for p in lora_b)  # peft loaded trained, non-zero updates

    archive = zip_adapter(adapter, tmp_path / "adapter.zip")
    assert sorted(zipfile.ZipFile(archive).namelist()) == ["adapter_config.json", "adapter_model.safetensors"]


def test_a_qlora_adapter_exports_for_peft(tmp_path, lab_model_dir, small_task):
    """QLoRA trains against NF4 base weights, so on the full-precision base peft's answers may
    differ from the server's; the adapter itself is a standard one and loads."""
    adapter = tmp_path / "adapter"
    summary = _train("qlora", lab_model_dir, small_task, adapter)
    assert summary.method == "qlora" and summary.steps_completed == 2
    saved = json.loads((adapter / "adapter_config.json").read_text())
    assert saved["task_type"] == "CAUSAL_LM" and saved["base_model_name_or_path"] == BASE_ID
    assert saved["target_modules"] == ["q_proj", "v_proj"] and not saved["use_dora"]
    state = load_file(adapter / "adapter_model.safetensors")
    assert len(state) == 30 * 2 * 2 and all(t.dtype == torch.float32 for t in state.values())
    theirs = peft.PeftModel.from_pretrained(_fresh_base(lab_model_dir), adapter)
    loaded = dict(theirs.named_parameters())
    name = "base_model.model.model.layers.3.self_attn.v_proj.lora_B.default.weight"
    torch.testing.assert_close(loaded[name], state["base_model.model.model.layers.3.self_attn.v_proj.lora_B.weight"])
    assert torch.count_nonzero(loaded[name]) > 0
