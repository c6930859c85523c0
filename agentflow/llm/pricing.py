"""What model calls cost: a pricing table in US dollars per 1M tokens.

The shipped table is ``configs/pricing.json`` in AgentFlow's data folder (see
:func:`agentflow.config.data_path`); a rollout config's ``pricing`` key overrides or adds
models. A model the table does not know has an unknown cost (``None``), never 0, so a
sum over calls that includes one is unknown too.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Mapping

from ..config import ConfigError, data_path

__all__ = ["ModelPrice", "Pricing", "load_pricing", "shipped_pricing_file"]


@dataclasses.dataclass(frozen=True)
class ModelPrice:
    """Dollars per 1M tokens."""

    prompt: float
    completion: float
    cached_prompt: float | None = None
    """For prompt tokens read from the provider's cache; ``None``: priced as ``prompt``."""

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_prompt_tokens: int = 0) -> float:
        """The cost of the tokens; cached ones are part of ``prompt_tokens`` (as providers report them)."""
        cached = min(max(cached_prompt_tokens, 0), prompt_tokens)
        cached_rate = self.prompt if self.cached_prompt is None else self.cached_prompt
        return ((prompt_tokens - cached) * self.prompt + cached * cached_rate
                + completion_tokens * self.completion) / 1_000_000


# a dated release or a tag after the base name: gpt-4o-2024-08-06, claude-sonnet-4-20250514, o3-latest
_VERSION_TAIL = re.compile(r"^-(\d{4}-\d{2}-\d{2}|\d{8}|\d{4}|latest)$")


class Pricing:
    """Model name → :class:`ModelPrice`."""

    def __init__(self, models: Mapping[str, ModelPrice]):
        self.models = {k.lower(): v for k, v in models.items()}

    def price(self, model: str | None) -> ModelPrice | None:
        """The price of ``model``: its exact entry, else that of its name without a
        provider prefix (``openai/``) or a version tail (``-2024-08-06``); ``None`` when
        unknown."""
        if not model:
            return None
        name = model.strip().lower()
        for cand in (name, name.rsplit("/", 1)[-1]):
            if cand in self.models:
                return self.models[cand]
            for key in sorted(self.models, key=len, reverse=True):  # gpt-4o-mini-... before gpt-4o
                if cand.startswith(key) and _VERSION_TAIL.match(cand[len(key):]):
                    return self.models[key]
        return None

    def cost(self, model: str | None, prompt_tokens: int, completion_tokens: int,
             cached_prompt_tokens: int = 0) -> float | None:
        """Dollars for these tokens of ``model``; ``None`` when its price is unknown."""
        price = self.price(model)
        if price is None:
            return None
        return price.cost(prompt_tokens, completion_tokens, cached_prompt_tokens)


def shipped_pricing_file() -> Path:
    return data_path() / "configs" / "pricing.json"


def _entry(name: str, value: Any, where: str) -> ModelPrice:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: the price of {name!r} must be an object with prompt and completion, got {value!r}")
    unknown = set(value) - {"prompt", "completion", "cached_prompt"}
    if unknown:
        raise ConfigError(f"{where}: the price of {name!r} has unknown keys {sorted(unknown)}; "
                          f"known: prompt, completion, cached_prompt")
    numbers = {}
    for key in ("prompt", "completion", "cached_prompt"):
        v = value.get(key)
        if v is None and key == "cached_prompt":
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ConfigError(f"{where}: {name!r} {key} must be a number >= 0 (dollars per 1M tokens), got {v!r}")
        numbers[key] = float(v)
    return ModelPrice(**numbers)


def parse_models(models: Any, where: str) -> dict[str, ModelPrice]:
    if not isinstance(models, Mapping):
        raise ConfigError(f"{where} must be an object of model name → price, got {models!r}")
    return {str(k): _entry(str(k), v, where) for k, v in models.items()}


def load_pricing(overrides: Mapping[str, Any] | None = None, path: str | Path | None = None) -> Pricing:
    """The shipped table (or ``path``) with ``overrides`` (model → ``{prompt, completion,
    cached_prompt}``) replacing or adding models.

    Raises:
        ConfigError: an unreadable file or a malformed price.
    """
    file = Path(path) if path else shipped_pricing_file()
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read the pricing file {file}: {err}") from err
    models = parse_models(data.get("models") or {}, str(file))
    models.update(parse_models(overrides or {}, "the 'pricing' config key"))
    return Pricing(models)
