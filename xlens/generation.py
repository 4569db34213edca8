"""Generation, perplexity and language identification, with or without interventions.

Generation is KV-cached by default: the prompt fills the cache in one pass, then every step runs the model on the
new token alone. TransformerLens 4.3's bridge drops the cache under transformers 5.x (its attention reads
``past_key_values``, the layers pass ``cache``), which is why ``bridge.generate()`` gives wrong logits; xlens hands
the cache on (:meth:`xlens.models.LensModel.kv_cache`) and calls the Hugging Face model, whose modules hold the
bridge's hook points, so every intervention runs at every step. ``kv_cache=False`` keeps the reference loop: a full
forward pass over the whole sequence per token. Both give the same greedy tokens under every intervention type
(tests/test_kv_generation.py). Only the last position is unembedded (``logits_to_keep=1``), which matters on
Gemma-3, whose unembedding outweighs its body.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import replace
from functools import cache
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor

from xlens.data.languages import UnknownLanguageError, flores_code, resolve_language
from xlens.errors import GenerationError
from xlens.interventions import Hook, Intervention, TokenPositions, apply, token_positions
from xlens.models.lens import LOGITS_MAX_TOKENS, ForwardBatch, LensModel, TokenBatch

UNKNOWN_LANGUAGE = "und"

# English prompt openings for steering runs (``--prompts builtin``): everyday topics, open-ended endings.
BUILTIN_PROMPTS: tuple[str, ...] = (
    "My favourite place in the city is",
    "When I was a child, I used to",
    "The best way to spend a weekend is",
    "Yesterday I went to the market and",
    "The weather this morning was",
    "My grandmother always told me that",
    "The most important thing in a friendship is",
    "Last summer we travelled to",
    "Every morning before work, I",
    "The book I am reading now is about",
    "In my opinion, the city should",
    "The restaurant near our house serves",
    "When the train finally arrived,",
    "My neighbour has a dog that",
    "The teacher asked the students to",
    "At the end of the concert, the audience",
    "The new museum in town shows",
    "On rainy days, I like to",
    "The doctor said that I should",
    "Our family dinner on Sunday was",
    "The children were playing in the park when",
    "After a long day at work, I usually",
    "The story begins in a small village where",
    "If I could learn any skill, it would be",
    "The price of bread has",
    "She opened the letter and read",
    "The football match last night was",
    "In the garden behind the house there is",
    "The first thing I do when I wake up is",
    "Our holiday plans for next year include",
)


def load_prompts(spec: str | os.PathLike[str] | Sequence[str] = "builtin") -> list[str]:
    """Prompts from ``"builtin"`` (:data:`BUILTIN_PROMPTS`), a text file (one prompt per line, blank lines
    skipped), or a list of strings."""
    if isinstance(spec, str | os.PathLike) and str(spec) == "builtin":
        return list(BUILTIN_PROMPTS)
    if isinstance(spec, str | os.PathLike):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise GenerationError(
                f"prompts must be 'builtin' or a text file with one prompt per line; {path} is not a file"
            )
        prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not prompts:
            raise GenerationError(f"{path} holds no prompts (one per line)")
        return prompts
    prompts = list(spec)
    if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise GenerationError("prompts must be a non-empty list of non-empty strings")
    return prompts


def check_generation(
    max_new_tokens: int, batch_size: int | None, greedy: bool, temperature: float, top_p: float | None
) -> None:
    """Generation settings, checked before any model runs."""
    if max_new_tokens < 0:
        raise GenerationError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if batch_size is not None and batch_size < 1:
        raise GenerationError(f"batch_size must be >= 1, got {batch_size}")
    if not greedy and temperature <= 0:
        raise GenerationError(f"temperature must be > 0 for sampling, got {temperature} (or use greedy=True)")
    if top_p is not None and not 0 < top_p <= 1:
        raise GenerationError(f"top_p must lie in (0, 1], got {top_p}")


def generate(
    model: LensModel,
    prompts: Sequence[str],
    max_new_tokens: int = 20,
    *,
    interventions: Sequence[Intervention | Hook] = (),
    greedy: bool = True,
    temperature: float = 1.0,
    top_p: float | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    stop_at_eos: bool = True,
    stop: str | None = None,
    kv_cache: bool = True,
) -> list[str]:
    """Continue every prompt (returns the continuations only, special tokens dropped).

    Prompts are left-padded into batches, so every row's next token is read at the last column; the mask keeps
    padding out of attention and positions. Interventions are active on every forward pass; for their ``where``,
    prompt = the prompt tokens and last = the last prompt token and every generated token (see
    :mod:`xlens.interventions`).

    Sampling (``greedy=False``) draws from ``softmax(logits / temperature)``, restricted to the nucleus of
    probability ``top_p`` when given, with a generator seeded by ``seed``: the same call gives the same texts.
    A row stops at the EOS token (``stop_at_eos``) and, with ``stop``, once its continuation contains that string
    (the text is cut before it). Results do not depend on the batch beyond float rounding.

    With ``kv_cache`` (the default) each step runs the model on the new token only, reading the earlier ones' keys
    and values from a cache; without it every step is a full forward pass over the whole sequence. Both give the
    same tokens under every xlens intervention, which acts on each token's own activations (a raw hook that mixes
    positions needs ``kv_cache=False``, since cached steps show it the new column only).
    """
    if isinstance(prompts, str):
        raise GenerationError("generate takes a list of prompts; wrap a single prompt in a list")
    prompts = load_prompts(list(prompts))
    check_generation(max_new_tokens, batch_size, greedy, temperature, top_p)
    if stop == "":
        raise GenerationError("stop must be a non-empty string (or None)")
    generator = torch.Generator(device=model.device).manual_seed(seed)
    out: list[str] = [""] * len(prompts)
    # Batches of similar length (left-padded) from the model's batcher; each row goes back to its prompt's place.
    for batch in model.batches(prompts, batch_size=batch_size, max_length=None, padding="left"):
        rows = _generate_batch(
            model,
            batch,
            max_new_tokens,
            interventions,
            None if greedy else (temperature, top_p, generator),
            stop_at_eos,
            stop,
            kv_cache,
        )
        for i, text in zip(batch.row_ids.tolist(), rows, strict=True):
            out[i] = text
    return out


def _generate_batch(
    model: LensModel,
    batch: ForwardBatch,
    max_new_tokens: int,
    interventions: Sequence[Intervention | Hook],
    sampling: tuple[float, float | None, torch.Generator] | None,
    stop_at_eos: bool,
    stop: str | None,
    kv_cache: bool,
) -> list[str]:
    tokens, mask = batch.tokens, batch.mask
    n, width = tokens.shape
    eos = model.tokenizer.eos_token_id if stop_at_eos else None
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    finished = torch.zeros(n, dtype=torch.bool, device=tokens.device)
    new: list[list[int]] = [[] for _ in range(n)]
    positions = TokenPositions.generating(width, n)
    kv = model.kv_cache() if kv_cache else None

    def text(row: int) -> str:
        return model.tokenizer.decode(new[row], skip_special_tokens=True)

    with torch.inference_mode(), apply(model, *interventions):
        for _ in range(max_new_tokens):
            if kv is None:
                with token_positions(positions):
                    logits = model.logits_at_last(TokenBatch(tokens, mask))
            else:
                # The first step fills the cache with the prompt; later ones pass the newest column only.
                offset = 0 if tokens.shape[1] == width else tokens.shape[1] - 1
                with token_positions(replace(positions, offset=offset)):
                    logits = model.decode(tokens[:, offset:], mask, kv)
            next_ids = _pick(logits, sampling)
            for row in (~finished).nonzero().squeeze(1).tolist():
                new[row].append(int(next_ids[row]))
                if stop is not None and stop in text(row):
                    finished[row] = True
            if eos is not None:
                finished |= next_ids == eos
            # Rows that are done get right padding: masked, and after their real tokens, so harmless.
            next_ids = next_ids.masked_fill(finished, pad)
            tokens = torch.cat([tokens, next_ids.unsqueeze(1)], dim=1)
            mask = torch.cat([mask, (~finished).unsqueeze(1)], dim=1)
            if bool(finished.all()):
                break
    texts = [text(row) for row in range(n)]
    return [t.split(stop, 1)[0] for t in texts] if stop is not None else texts


def _pick(logits: Float[Tensor, "batch vocab"], sampling: tuple[float, float | None, torch.Generator] | None) -> Tensor:
    if sampling is None:
        return logits.argmax(dim=-1)
    temperature, top_p, generator = sampling
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p is not None and top_p < 1:
        ordered, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        drop = ordered.cumsum(dim=-1) - ordered >= top_p
        ordered = ordered.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, ordered)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def token_nll(
    model: LensModel,
    texts: Sequence[str],
    *,
    interventions: Sequence[Intervention | Hook] = (),
    batch_size: int | None = None,
    max_length: int | None = 256,
) -> tuple[Float[Tensor, " text"], Int[Tensor, " text"]]:
    """Per text, the summed negative log-likelihood of its predicted tokens and how many there are.

    Every real token after the first of its text is predicted; the first (BOS where the model prepends one) has no
    context and is not. Interventions are active with prompt = the text's real tokens, last = its last real token
    (set by :meth:`xlens.models.LensModel.forward`).
    """
    if isinstance(texts, str) or len(texts) == 0:
        raise GenerationError("perplexity takes a non-empty list of texts")
    if batch_size is not None and batch_size < 1:
        raise GenerationError(f"batch_size must be >= 1, got {batch_size}")
    total = torch.zeros(len(texts), dtype=torch.float64)
    count = torch.zeros(len(texts), dtype=torch.int64)

    def score(logits: Tensor, batch: ForwardBatch) -> None:
        targets = batch.tokens[:, 1:].to(logits.device)
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, reduction="none")
        predicted = batch.mask_on(logits.device)[:, 1:]
        batch.store(total, (nll * predicted).double().sum(dim=1))
        batch.store(count, predicted.sum(dim=1))

    model.forward(
        texts,
        logits=score,
        interventions=interventions,
        batch_size=batch_size,
        max_tokens=LOGITS_MAX_TOKENS,
        max_length=max_length,
    )
    return total, count


def perplexity(
    model: LensModel,
    texts: Sequence[str],
    *,
    interventions: Sequence[Intervention | Hook] = (),
    batch_size: int | None = None,
    max_length: int | None = 256,
) -> float:
    """Perplexity of ``texts``: exp of the mean negative log-likelihood over all predicted tokens (token-weighted;
    see :func:`token_nll`)."""
    total, count = token_nll(model, texts, interventions=interventions, batch_size=batch_size, max_length=max_length)
    if int(count.sum()) == 0:
        raise GenerationError("no text has a token to predict (every text is a single token)")
    return math.exp(float(total.sum()) / int(count.sum()))


# --- language identification -------------------------------------------------------------------------------


@cache
def _flores(iso: str) -> str:
    try:
        return resolve_language(iso).flores
    except UnknownLanguageError:
        return iso  # a py3langid language outside the table (e.g. 'an', 'wa') keeps its ISO code


def language_id(texts: Sequence[str]) -> list[str]:
    """The language of each text as a FLORES code (``spa_Latn``), by py3langid (offline, 97 languages).

    Empty or whitespace-only texts get ``"und"``; py3langid's ``"zxx"`` means no linguistic content (markup,
    digits); languages outside xlens' table keep py3langid's ISO code.
    py3langid is unreliable on a few words: judge rates over many continuations, not single ones.
    """
    if isinstance(texts, str):
        raise GenerationError("language_id takes a list of texts; wrap a single text in a list")
    import py3langid

    return [_flores(py3langid.classify(t)[0]) if t.strip() else UNKNOWN_LANGUAGE for t in texts]


def target_language_rate(texts: Sequence[str], lang: str) -> float:
    """Fraction of ``texts`` identified as ``lang`` (any accepted code: ``es``, ``spa``, ``spa_Latn``)."""
    if isinstance(texts, str) or len(texts) == 0:
        raise GenerationError("target_language_rate takes a non-empty list of texts")
    code = flores_code(lang)
    return sum(found == code for found in language_id(texts)) / len(texts)
