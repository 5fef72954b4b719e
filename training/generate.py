"""Greedy answers from a chat model: what the lab shows before, during and after training.

Greedy decoding (always the most likely next token) makes an answer a function of the weights
alone, so the same adapter gives the same answer on the server and in peft on a reader's
machine. Prompts are left-padded into one batch; a batch of the same prompts gives the same
answers wherever it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from transformers import StoppingCriteria, StoppingCriteriaList

from training.data import prompt_ids


class _EachToken(StoppingCriteria):
    """Calls `on_token()` once per generated token; never stops generation itself."""

    def __init__(self, on_token: Callable[[], None]) -> None:
        self.on_token = on_token

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        self.on_token()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


@torch.no_grad()
def greedy_answers(
    model: nn.Module,
    tokenizer,
    system_prompt: str,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 16,
    on_token: Callable[[], None] | None = None,
) -> list[str]:
    """The model's greedy answer to each prompt (special tokens and surrounding space removed).

    `model` is a transformers causal LM (ours with adapters injected, or a peft PeftModel); it is
    put in eval mode for the call and restored after. Decoding a token reads every weight
    whatever the batch, so one batch of 16 answers in ~0.6× the time of two batches of 8 on a
    CPU. `on_token()` is called after each generated token (of the whole batch), for progress.
    """
    was_training = model.training
    model.eval()
    answers: list[str] = []
    pad_id = tokenizer.pad_token_id
    device = next(model.parameters()).device
    for start in range(0, len(prompts), batch_size):
        ids = [prompt_ids(tokenizer, system_prompt, p) for p in prompts[start : start + batch_size]]
        length = max(map(len, ids))
        input_ids = torch.tensor([[pad_id] * (length - len(row)) + row for row in ids], device=device)
        attention_mask = torch.tensor([[0] * (length - len(row)) + [1] * len(row) for row in ids], device=device)
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad_id,
            eos_token_id=tokenizer.eos_token_id,
            stopping_criteria=StoppingCriteriaList([_EachToken(on_token)]) if on_token is not None else None,
        )  # (batch, length + new)
        answers += [tokenizer.decode(row[length:], skip_special_tokens=True).strip() for row in output]
    model.train(was_training)
    return answers
