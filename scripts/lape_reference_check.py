"""LAPE on the embedded model against its reference: ``python scripts/lape_reference_check.py --json OUT``.

Counts active tokens with xlens (``gate_active`` and ``active``) and with the tests' transcription of the reference
(RUCAIBox/Language-Specific-Neurons ``identify.py``: ``act_fn(gate_proj(x)) > 0``, read at the Hugging Face MLP's
own ``act_fn``, each sentence alone), on ``--sentences`` FLORES-200 devtest sentences in each of en, es, de, fr, ja,
and compares the LAPE selections of the three at ``--top-rate``: xlens's default (gate counts) must equal the
reference's; the neuron counts (``counts = "post"``) are the other definition.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the reference's transcription lives with the tests

from test_lape import _reference_selection  # noqa: E402
from test_lape_reference import _reference_counts  # noqa: E402

import xlens  # noqa: E402
from xlens._io import produced_by, write_json  # noqa: E402
from xlens.activations import collect_responses  # noqa: E402
from xlens.experts.lape import lape  # noqa: E402

LANGS = ["en", "es", "de", "fr", "ja"]


def _selection(counts: torch.Tensor, tokens: torch.Tensor, lang_ids: torch.Tensor, top_rate: float) -> dict:
    result = lape(counts, tokens, lang_ids, len(LANGS), top_rate=top_rate)
    return {lang: set(result.units_for(i).tolist()) for i, lang in enumerate(LANGS)}


def _jaccard(a: set[int], b: set[int]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--sentences", type=int, default=50)
    parser.add_argument("--top-rate", type=float, default=0.01)
    parser.add_argument("--flores", default=str(ROOT.parent / "shared/data/flores200/devtest"))
    args = parser.parse_args()
    started = time.perf_counter()
    model = xlens.load_model()
    corpus = xlens.load_corpus(f"flores:{args.flores}", langs=LANGS).head(args.sentences)
    texts = [t for lang in LANGS for t in corpus[lang]]
    lang_ids = torch.arange(len(LANGS)).repeat_interleave(args.sentences)
    ours = collect_responses(model, texts, pooling=["gate_active", "active"], lang_ids=lang_ids, progress=False)
    reference = _reference_counts(model, texts)
    tokens = ours.token_counts
    gate, post = (_selection(c, tokens, lang_ids, args.top_rate) for c in (ours["gate_active"], ours["active"]))
    # The reference's own selection (numpy transcription of identify.py) on its own counts.
    prob = np.stack([reference.numpy()[lang_ids == i].sum(0) / tokens[lang_ids == i].sum().item() for i in range(5)])
    _, per_lang = _reference_selection(prob, args.top_rate, 0.95, 0.95)
    report = {
        "command": f"python scripts/lape_reference_check.py --json {args.json} --sentences {args.sentences}",
        "commit": produced_by()["commit"],
        "model": model.identity(),
        "sentences_per_language": args.sentences,
        "top_rate": args.top_rate,
        "counts_equal_reference": bool(torch.equal(ours["gate_active"], reference)),
        "mean_activation_probability": {
            "gate (reference)": float((reference.sum(0) / tokens.sum()).mean()),
            "post (neuron)": float((ours["active"].sum(0) / tokens.sum()).mean()),
        },
        "units": {
            "gate": {lang: len(units) for lang, units in gate.items()},
            "reference": {lang: len(per_lang[i]) for i, lang in enumerate(LANGS)},
            "post": {lang: len(units) for lang, units in post.items()},
        },
        "gate_equals_reference": all(sorted(gate[lang]) == per_lang[i] for i, lang in enumerate(LANGS)),
        "jaccard_post_vs_reference": {lang: _jaccard(post[lang], set(per_lang[i])) for i, lang in enumerate(LANGS)},
        "seconds": time.perf_counter() - started,
    }
    write_json(args.json, report)
    print(report)


if __name__ == "__main__":
    main()
