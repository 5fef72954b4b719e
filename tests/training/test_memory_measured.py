"""calculators.memory against what real transformers / peft / bitsandbytes models keep, on the CPU.

Each recipe of training/memory_recipes.py is built for real (random weights of a tiny
Llama-shaped `Architecture`, grouped-query attention) and measured three ways:

* saved tensors: every storage autograd saves in the forward pass (saved_tensors_hooks, each
  storage once, parameters excluded) must equal the estimator's `kept_after_forward_bytes`
  within SAVED_TOLERANCE — 2 %, against the 2× the old model was off by;
* kept after forward, gradient checkpointing on: the CPU profiler's running allocation total
  after the forward (minus the CPU RNG-state snapshot each checkpointed layer takes, host
  memory on a GPU) against the same number;
* one training step's peak above the persistent state (CPU profiler) against the estimator's
  peak minus weights, constants, adapters and optimizer states, within STEP_TOLERANCE.

Parameters, gradients, quantization constants and optimizer states are counted exactly from the
real objects. The CPU runs PyTorch's flash kernel for every dtype, so the estimator is told
`attention_kernel="flash"` (or "math" where the test forces SDPA's math backend); which kernel a
CUDA device picks is not measured here.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("bitsandbytes")

from calculators.architectures import Architecture  # noqa: E402
from calculators.memory import estimate_memory  # noqa: E402
from training import memory_recipes as recipes  # noqa: E402

TOY = Architecture("toy-gqa", "Toy GQA Llama", "llama", "llama", "LlamaForCausalLM", hidden_size=64,
                   intermediate_size=160, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                   vocab_size=96, max_position_embeddings=1024, tie_word_embeddings=False)
R, ALPHA, TARGETS, BATCH = 4, 8, "all-linear", 2
SAVED_TOLERANCE = 0.02
# Under autocast the CPU's flash kernel returns its output in (batch, heads, seq, dim) layout, so
# transformers' .contiguous() makes one more T·q copy per layer for o_proj's adapter than CUDA's
# flash kernel (whose output is already (batch, seq, heads, dim)); measured: 3 % at these sizes.
AUTOCAST_TOLERANCE = 0.04
STEP_TOLERANCE = 0.10
RECIPES = ("lora", "qlora", "qlora_noprep", "full", "full_bf16", "lora_autocast", "qlora_autocast")
RNG_STATE_BYTES = torch.get_rng_state().numel()
# peft's prepare_model_for_kbit_training checkpoints without naming use_reentrant (the real recipe)
pytestmark = pytest.mark.filterwarnings("ignore:torch.utils.checkpoint")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return recipes.save_random_model(TOY, tmp_path_factory.mktemp("memory-recipes"))


_BUILT: dict = {}


@pytest.fixture(scope="module")
def build(model_dir):
    """Build (and cache for the module) one recipe's model."""

    def _build(recipe: str, checkpointing: bool, attn: str = "sdpa"):
        key = (recipe, checkpointing, attn)
        if key not in _BUILT:
            torch.manual_seed(0)
            _BUILT[key] = recipes.build_model(model_dir, recipe, checkpointing, r=R, lora_alpha=ALPHA,
                                              targets=TARGETS, attn_implementation=attn)
        return _BUILT[key]

    yield _build
    _BUILT.clear()


def _estimate(recipe: str, checkpointing: bool, seq_len: int, **extra):
    kwargs = recipes.estimate_kwargs(recipe, R, TARGETS, checkpointing)
    kwargs.setdefault("attention_kernel", "flash")
    kwargs.update(extra)
    return estimate_memory(TOY, batch_size=BATCH, seq_len=seq_len, **kwargs)


def _ids(seq_len: int):
    return torch.randint(0, TOY.vocab_size, (BATCH, seq_len), generator=torch.Generator().manual_seed(seq_len))


def _tolerance(recipe: str) -> float:
    return AUTOCAST_TOLERANCE if recipe.endswith("autocast") else SAVED_TOLERANCE


# --- what autograd saves ------------------------------------------------------------------


@pytest.mark.parametrize("seq_len", [16, 96])
@pytest.mark.parametrize("recipe", RECIPES)
def test_saved_tensors_match_the_estimate(build, recipe, seq_len):
    saved = recipes.saved_tensor_bytes(build(recipe, False), _ids(seq_len), recipe)
    estimate = _estimate(recipe, False, seq_len)
    assert estimate.kept_after_forward_bytes == pytest.approx(saved.total_bytes, rel=_tolerance(recipe))


@pytest.mark.parametrize("recipe", ["lora", "qlora", "full"])
def test_math_kernel_saved_tensors(build, recipe):
    """SDPA's math kernel (what CUDA runs for fp32 attention with grouped-query heads) keeps the
    b·heads·s² probabilities, in fp32 even for 16-bit inputs."""
    saved = recipes.saved_tensor_bytes(build(recipe, False), _ids(96), recipe, sdpa_backend="math")
    estimate = _estimate(recipe, False, 96, attention_kernel="math")
    assert estimate.kept_after_forward_bytes == pytest.approx(saved.total_bytes, rel=SAVED_TOLERANCE)
    flash = _estimate(recipe, False, 96)
    probabilities = 4 * BATCH * TOY.num_attention_heads * 96**2 * TOY.num_hidden_layers
    assert estimate.kept_after_forward_bytes - flash.kept_after_forward_bytes > probabilities // 2


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("recipe", ["lora", "qlora", "full"])
def test_eager_attention(build, recipe, checkpointing):
    kept = recipes.measured_kept_bytes(build(recipe, checkpointing, attn="eager"), _ids(64), recipe, checkpointing)
    estimate = _estimate(recipe, checkpointing, 64, attn_impl="eager", attention_kernel=None)
    assert estimate.kept_after_forward_bytes == pytest.approx(kept, rel=SAVED_TOLERANCE)


@pytest.mark.parametrize("seq_len", [16, 96])
@pytest.mark.parametrize("recipe", RECIPES)
def test_checkpointed_forward_keeps_what_the_estimate_says(build, recipe, seq_len):
    """transformers' checkpointing keeps each layer's input (and RoPE's tables) plus the head and loss."""
    kept = recipes.measured_kept_bytes(build(recipe, True), _ids(seq_len), recipe, True)
    estimate = _estimate(recipe, True, seq_len)
    assert estimate.kept_after_forward_bytes == pytest.approx(kept, rel=SAVED_TOLERANCE)


def test_qlora_keeps_fp32_activations_and_the_old_model_would_fail(build):
    """prepare_model_for_kbit_training makes the residual stream fp32: the estimate without it
    (every activation 16-bit, as the book used to say) misses the measurement by far more than
    the tolerance."""
    saved = recipes.saved_tensor_bytes(build("qlora", False), _ids(96), "qlora", sdpa_backend="math")
    prepared = _estimate("qlora", False, 96, attention_kernel="math")
    as_if_bf16 = _estimate("qlora", False, 96, attention_kernel="flash", prepare_kbit=False)
    assert prepared.residual_dtype == "fp32" and as_if_bf16.residual_dtype == "bf16"
    assert abs(prepared.kept_after_forward_bytes - saved.total_bytes) <= SAVED_TOLERANCE * saved.total_bytes
    assert saved.total_bytes > 1.3 * as_if_bf16.kept_after_forward_bytes


# --- a whole step --------------------------------------------------------------------------


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("recipe", ["lora", "qlora", "full", "full_bf16"])
def test_step_peak_above_persistent_state(build, recipe, checkpointing):
    model = build(recipe, checkpointing)
    optimizer = recipes.make_optimizer(model, "adamw_torch_fused")
    ids = _ids(256)
    for _ in range(2):  # step 1 creates the optimizer states; the profiled step is a steady one
        peak = recipes.step_peak_bytes(model, optimizer, ids, recipe)
    measured = peak.peak_bytes - (TOY.num_hidden_layers * RNG_STATE_BYTES if checkpointing else 0)
    estimate = _estimate(recipe, checkpointing, 256)
    persistent = (estimate.weights_bytes + estimate.quant_constants_bytes + estimate.adapter_weights_bytes
                  + estimate.optimizer_states_bytes + estimate.master_weights_bytes)
    assert estimate.total_bytes - persistent == pytest.approx(measured, rel=STEP_TOLERANCE)


@pytest.mark.parametrize("optimizer_name", ["adamw_torch_fused", "adamw_torch", "adafactor", "sgd"])
@pytest.mark.parametrize("recipe", ["full", "full_bf16"])
def test_optimizer_step_temporaries(build, recipe, optimizer_name):
    """foreach AdamW allocates sqrt(v) for every parameter at once; the fused kernel nothing;
    Adafactor a few fp32 copies of its largest parameter; SGD nothing."""
    model = build(recipe, False)
    optimizer = recipes.make_optimizer(model, optimizer_name)
    ids = _ids(16)
    for _ in range(2):
        peak = recipes.step_peak_bytes(model, optimizer, ids, recipe)
    estimate = _estimate(recipe, False, 16, optimizer=optimizer_name)
    step = estimate.phase("optimizer step")
    assert step.gradients + step.temporary == pytest.approx(peak.step_bytes, rel=0.01)
    if optimizer_name == "adamw_torch":
        assert step.temporary == step.gradients  # one state-sized list, states typed like the parameters


# --- parameters, gradients and states, counted from the real objects ----------------------


def _nbytes(t) -> int:
    return t.numel() * t.element_size()


def _unique_bytes(tensors) -> int:
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def _quant_state_tensors(model):
    for module in model.modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if state is not None:
            yield from (state.absmax, state.code)
            if state.nested:
                yield from (state.state2.absmax, state.state2.code, state.offset)


@pytest.mark.parametrize("optimizer_name", ["adamw_torch_fused", "adamw_bnb_8bit", "adafactor"])
@pytest.mark.parametrize("recipe", ["lora", "qlora", "qlora_noprep", "full", "full_bf16"])
def test_parameters_gradients_and_states_are_counted_exactly(build, recipe, optimizer_name):
    model = build(recipe, False)
    optimizer = recipes.make_optimizer(model, optimizer_name)
    with recipes.autocast_for(recipe):
        loss = model(input_ids=_ids(16), labels=_ids(16)).loss
    loss.backward()
    optimizer.step()
    grads = _unique_bytes(p.grad for p in model.parameters() if p.grad is not None)
    states = _unique_bytes(v for state in optimizer.state.values() for v in state.values()
                           if torch.is_tensor(v) and v.numel() > 1)
    optimizer.zero_grad(set_to_none=True)
    frozen = sum(_nbytes(p) for p in model.parameters() if not p.requires_grad)
    trained = sum(_nbytes(p) for p in model.parameters() if p.requires_grad)
    estimate = _estimate(recipe, False, 16, optimizer=optimizer_name)
    assert estimate.phase("optimizer step").gradients == grads
    assert estimate.optimizer_states_bytes == states
    if recipe.startswith("full"):
        assert (estimate.weights_bytes, estimate.adapter_weights_bytes) == (trained, 0)
    else:
        assert (estimate.weights_bytes, estimate.adapter_weights_bytes) == (frozen, trained)
    assert estimate.quant_constants_bytes == _unique_bytes(_quant_state_tensors(model))

