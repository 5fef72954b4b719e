"""Chapter 9's peft snippet, executed as written on an adapter the lab exported, with the real
cached SmolLM2 as `base`: it prints exactly what the lab answers for the same request."""

from __future__ import annotations

import contextlib
import io
import re

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from app.settings import PROJECT_ROOT  # noqa: E402
from training.generate import greedy_answers  # noqa: E402
from training.model_cache import export_base  # noqa: E402
from training.run import TrainConfig, prepare, train  # noqa: E402

CHAPTER = PROJECT_ROOT / "content" / "09-lab.md"
BASE_LINE = 'base = "HuggingFaceTB/SmolLM2-135M-Instruct"'


def chapter_snippet() -> str:
    text = CHAPTER.read_text(encoding="utf-8")
    section = text[text.index("## Loading the adapter with peft"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_chapters_peft_code_reproduces_the_labs_answer(tmp_path, monkeypatch, lab_model_dir, small_task):
    code = chapter_snippet()
    assert BASE_LINE in code and '"adapter/"' in code
    prompt = re.search(r'"role": "user", "content": "(.*?)"', code).group(1)
    system = re.search(r'"role": "system", "content": "(.*?)"', code).group(1)
    assert system == small_task.system_prompt and prompt == small_task.test[0].prompt  # a held-out request

    config = TrainConfig(r=4, lora_alpha=8, steps=3, batch_size=2, lr=1e-2, seed=4, max_new_tokens=8, sample_every=0)
    summary = list(train(config, lab_model_dir, output_dir=tmp_path / "adapter", task=small_task, device="cpu"))[-1]
    assert summary.steps_completed == 3
    # what the lab's "try it" path answers: the adapter reloaded into our model, greedy, one prompt
    ours, _, _ = prepare(config, lab_model_dir, torch.device("cpu"))
    from safetensors.torch import load_file

    state = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    ours.model.load_state_dict({k.removeprefix("base_model.model."): v for k, v in state.items()}, strict=False)
    expected = greedy_answers(ours.model, ours.tokenizer, system, [prompt], max_new_tokens=64)[0]

    base = export_base(lab_model_dir, tmp_path / "smollm2")  # what `loralab export-base` writes
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code.replace(BASE_LINE, f"base = {str(base)!r}"), str(CHAPTER), "exec"), {})
    assert printed.getvalue().strip() == expected
    assert expected  # the snippet printed a real answer
