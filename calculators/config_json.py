"""Any model: an Architecture from a pasted Hugging Face config.json, checked field by field.

A reader pastes the config.json of a model we do not list. `parse_config_json` accepts the
text as it is on the Hub, checks what the shape calculations read (each problem names its
field, e.g. ``config.hidden_size``), and returns the Architecture that
`calculators.architectures.from_hf_config` derives, as for the shipped slugs. Loader hints
(`auto_map`, `_name_or_path`, dtype, RoPE settings) are ignored: they do not change a count.
Pure Python: this also runs in the browser under Pyodide.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from calculators.architectures import FAMILIES, Architecture, from_hf_config

MAX_CONFIG_CHARS = 16_000  # a real config.json is 0.5–5 kB; Phi-3.5's RoPE factor lists make it ~4 kB
CUSTOM_SLUG = "custom"

# field -> largest accepted value: generous for any published model, small enough to stay arithmetic
_INT_BOUNDS = {
    "hidden_size": 131_072, "intermediate_size": 1_048_576, "num_hidden_layers": 4096,
    "num_attention_heads": 4096, "num_key_value_heads": 4096, "head_dim": 16_384, "vocab_size": 16_777_216,
    "max_position_embeddings": 268_435_456, "num_local_experts": 4096, "num_experts_per_tok": 4096,
    "type_vocab_size": 1024,
    # GPT-2's names
    "n_embd": 131_072, "n_layer": 4096, "n_head": 4096, "n_inner": 1_048_576, "n_positions": 268_435_456,
}
_REQUIRED = {
    "gpt2": ("n_embd", "n_layer", "n_head", "vocab_size", "n_positions"),
    "default": ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
                "max_position_embeddings"),
}
_OPTIONAL_INTS = ("num_key_value_heads", "head_dim", "num_local_experts", "num_experts_per_tok", "type_vocab_size",
                  "n_inner")
_BOOLS = ("tie_word_embeddings", "attention_bias", "mlp_bias")
_NAME = re.compile(r"^[\w.\- ]{1,64}$")


def parse_config_json(text: str, max_chars: int = MAX_CONFIG_CHARS) -> Architecture:
    """The Architecture of a pasted config.json; ValueError('config...: ...') names what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("config: paste the model's config.json")
    if len(text) > max_chars:
        raise ValueError(f"config: at most {max_chars:,} characters (this one has {len(text):,})")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"config: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    return architecture_from_config(config)


def architecture_from_config(config: Any) -> Architecture:
    """Check a config.json mapping and derive its Architecture (see the module docstring)."""
    if not isinstance(config, Mapping):
        raise ValueError("config: expected a JSON object, {...}, as in config.json")
    model_type = config.get("model_type")
    if model_type is None:
        hint = " (a multimodal config: paste its text_config)" if isinstance(config.get("text_config"), Mapping) else ""
        raise ValueError(f"config.model_type: missing{hint}; the supported types are {', '.join(FAMILIES)}")
    if model_type not in FAMILIES:
        raise ValueError(f"config.model_type: {str(model_type)[:40]!r} is not supported; "
                         f"choose a config of type {', '.join(FAMILIES)}")
    for name in _REQUIRED.get(model_type, _REQUIRED["default"]):
        if name not in config:
            raise ValueError(f"config.{name}: missing; a {model_type} config.json states it")
        _check_int(name, config[name])
    for name in _OPTIONAL_INTS:
        if config.get(name) is not None:
            _check_int(name, config[name])
    for name in _BOOLS:
        if name in config and not isinstance(config[name], bool):
            raise ValueError(f"config.{name}: must be true or false, got {config[name]!r}")
    architectures = config.get("architectures")
    if architectures is not None and not (isinstance(architectures, list) and all(isinstance(a, str) for a in architectures)):
        raise ValueError("config.architectures: must be a list of class names")
    try:
        return from_hf_config(CUSTOM_SLUG, display_name(config), config)
    except ValueError as exc:
        raise ValueError(f"config.{exc}") from None


def display_name(config: Mapping[str, Any]) -> str:
    """The model's name from `_name_or_path` ('meta-llama/Llama-3.2-1B' -> 'Llama-3.2-1B'), else its type."""
    name = config.get("_name_or_path")
    if isinstance(name, str):
        name = name.rstrip("/").rsplit("/", 1)[-1]
        if _NAME.match(name):
            return name
    return f"Pasted {config.get('model_type')} config"


def _check_int(name: str, value: object) -> None:
    bound = _INT_BOUNDS[name]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= bound:
        raise ValueError(f"config.{name}: must be an integer from 1 to {bound:,}, got {value!r}")
