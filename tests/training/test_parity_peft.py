"""Our LoRA against peft's on the real all-MiniLM-L6-v2: same init, same data -> same losses."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from training.data import encode, load_reviews, train_batches  # noqa: E402
from training.layers import LoRALinear  # noqa: E402
from training.model import load_model  # noqa: E402
from training.run import TrainConfig, make_optimizer, prepare, train_step  # noqa: E402

STEPS = 20
RTOL = 1e-5  # fp32 on CPU; in practice the two loss curves agree to ~1e-7


def _peft_twin(ours, config: TrainConfig, num_labels: int, targets):
    """peft's LoRA on a fresh copy of the same base, with our A/B copied in (same head seed)."""
    twin = load_model(num_labels, seed=config.seed)
    peft_model = peft.get_peft_model(
        twin.model,
        peft.LoraConfig(
            task_type="SEQ_CLS", r=config.r, lora_alpha=config.lora_alpha,
            target_modules=list(targets), lora_dropout=config.lora_dropout, use_rslora=config.use_rslora,
        ),
    )
    with torch.no_grad():
        for name, module in ours.named_modules():
            if isinstance(module, LoRALinear):
                layer = peft_model.base_model.model.get_submodule(name)
                layer.lora_A["default"].weight.copy_(module.lora_A.weight)
                layer.lora_B["default"].weight.copy_(module.lora_B.weight)
    return peft_model


def _losses(model, config: TrainConfig, batches) -> list[float]:
    optimizer, scheduler = make_optimizer(model, config)
    model.train()
    torch.manual_seed(config.seed)  # identical dropout masks in the (identical) BERT dropout layers
    return [train_step(model, batch, optimizer, scheduler) for batch in batches]


def test_first_20_losses_match_peft():
    # rsLoRA on, so peft's alpha/sqrt(r) path is the one compared (alpha/r is covered in test_layers)
    config = TrainConfig(r=4, lora_alpha=8, steps=STEPS, batch_size=4, seq_len=24, lr=2e-3, warmup_steps=2, seed=3, use_rslora=True)
    data = load_reviews()
    loaded, injection, targets = prepare(config, None, data, torch.device("cpu"))
    peft_model = _peft_twin(loaded.model, config, data.num_labels, targets)

    assert injection.trainable_params == peft_model.get_nb_trainable_parameters()[0]

    encoded = encode(loaded.tokenizer, data.train_texts, data.train_labels, config.seq_len)
    batches = list(train_batches(encoded, config.batch_size, config.steps, config.seed))
    ours = _losses(loaded.model, config, batches)
    theirs = _losses(peft_model, config, batches)
    torch.testing.assert_close(torch.tensor(ours), torch.tensor(theirs), rtol=RTOL, atol=0)
    print("max |ours - peft| / peft:", max(abs(a - b) / abs(b) for a, b in zip(ours, theirs)))
    moved = [m.lora_B.weight for m in loaded.model.modules() if isinstance(m, LoRALinear)]
    assert all(torch.count_nonzero(b) > 0 for b in moved)  # the comparison covered real updates


def test_merged_and_unmerged_outputs_agree():
    config = TrainConfig(r=4, lora_alpha=8, steps=5, batch_size=4, seq_len=24, seed=1)
    data = load_reviews()
    loaded, _, _ = prepare(config, None, data, torch.device("cpu"))
    model = loaded.model
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.lora_B.weight.copy_(0.05 * torch.randn(module.lora_B.weight.shape, generator=generator))
    model.eval()
    batch = encode(loaded.tokenizer, data.test_texts[:8], data.test_labels[:8], config.seq_len)
    batch.pop("labels")
    with torch.no_grad():
        unmerged = model(**batch).logits
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.merge()
        merged = model(**batch).logits
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.unmerge()
        restored = model(**batch).logits
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(restored, unmerged, rtol=1e-4, atol=1e-5)
