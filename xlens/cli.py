"""The ``xlens`` command line: every command names its model with ``--model`` and its data with a corpus spec."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that write JSON (run them on your own GPUs too).")
app.add_typer(bench_app, name="bench")

ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="gemma-3-270m (embedded), tiny-<arch>, a folder, a .gguf or a hub name")
]
CorpusOpt = Annotated[
    str,
    typer.Option(
        "--corpus", "-c", help="builtin | flores:PATH[:split] | ntrex:PATH | hf:NAME[:CONFIG] | dir:PATH | tsv:PATH"
    ),
]
LangsOpt = Annotated[str, typer.Option("--langs", "-l", help="comma-separated language codes (en, spa, deu_Latn, ...)")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="cuda, cpu, ... (default: cuda if available)")]
DtypeOpt = Annotated[str | None, typer.Option("--dtype", help="float32, bfloat16, float16")]


def _fail(err: Exception) -> None:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))


def _langs(text: str) -> list[str]:
    from xlens.data.languages import resolve_language

    codes = [c.strip() for c in text.split(",") if c.strip()]
    if not codes:
        raise ValueError("--langs is empty: give comma-separated codes such as en,es,de")
    return [resolve_language(c).flores for c in codes]


@app.command()
def info(
    model: ModelOpt = "",
    check: Annotated[bool, typer.Option(help="also load the model and the builtin corpus and run them")] = False,
) -> None:
    """Versions, device, cache folder, and (with --check) a smoke run of the model on the builtin corpus."""
    from importlib.metadata import version

    import torch
    import transformers

    import xlens
    from xlens.data.loaders import load_builtin
    from xlens.models import EMBEDDED_MODEL, cache_dir, default_device

    corpus = load_builtin()
    facts: dict[str, Any] = {
        "xlens": xlens.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "transformer_lens": version("transformer-lens"),
        "device": default_device(),
        "cuda_devices": torch.cuda.device_count(),
        "cache": str(cache_dir()),
        "default_model": EMBEDDED_MODEL,
        "builtin_corpus": f"{len(corpus)} sentences x {len(corpus.languages)} languages: "
        + ", ".join(corpus.languages),
    }
    for key, value in facts.items():
        typer.echo(f"{key:>18}: {value}")
    if not check:
        return
    try:
        from xlens.models import load_model

        start = time.perf_counter()
        lm = load_model(model or None)
        typer.echo(f"{'model':>18}: {lm!r} (loaded in {time.perf_counter() - start:.1f} s)")
        prompt = "The capital of France is"
        typer.echo(f"{'greedy':>18}: {prompt!r} -> {greedy_continuation(lm, prompt, 6)!r}")
        sample = corpus.select(["eng_Latn", "spa_Latn", "jpn_Jpan"]).head(2)
        batch = lm.tokenize([s for lang in sample.languages for s in sample[lang]])
        typer.echo(f"{'corpus batch':>18}: tokens {tuple(batch.tokens.shape)}, real tokens {batch.lengths.tolist()}")
    except Exception as err:  # one clear line, not a traceback
        _fail(err)


def greedy_continuation(lm: Any, prompt: str, n_tokens: int) -> str:
    """Greedy continuation with plain forward passes (no KV cache: exact under any hooks)."""
    import torch

    batch = lm.tokenize([prompt])
    tokens = batch.tokens
    with torch.inference_mode():
        for _ in range(n_tokens):
            logits = lm.bridge(tokens)
            tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return lm.tokenizer.decode(tokens[0, batch.tokens.shape[1] :])


@app.command()
def experts(
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")],
    model: ModelOpt = "",
    corpus: CorpusOpt = "builtin",
    langs: LangsOpt = "en,es,de,fr,ja",
    per_lang: Annotated[int, typer.Option(help="sentences per language (0: all)")] = 200,
    k: Annotated[int, typer.Option("--k", help="experts kept per language in each expert set")] = 1000,
    select: Annotated[str, typer.Option(help="top | per-layer | top-bottom | threshold")] = "top",
    threshold: Annotated[float | None, typer.Option(help="AP threshold for --select threshold")] = None,
    units: Annotated[str, typer.Option(help="mlp | linear | resid | re:REGEX over hook names")] = "mlp",
    pooling: Annotated[str, typer.Option(help="mean | max | last | median")] = "mean",
    batch_size: Annotated[int, typer.Option(help="sentences per forward pass")] = 16,
    seed: Annotated[int, typer.Option(help="seed of the sentence sample")] = 0,
    negatives: Annotated[
        str | None, typer.Option(help="score against these languages only (e.g. en) instead of all the others")
    ] = None,
    lape: Annotated[bool, typer.Option(help="also find LAPE language-specific units (writes OUT/lape/<lang>)")] = False,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Find language experts: score every unit by AP for each language against the others; write expert sets."""
    try:
        from xlens.activations import collect_corpus_responses
        from xlens.data.loaders import load_corpus
        from xlens.experts.sets import ExpertScores
        from xlens.models import load_model

        languages = _langs(langs)
        data = load_corpus(corpus, langs=languages)
        if per_lang:
            data = data.sample(per_lang, seed=seed)
        lm = load_model(model or None, device=device, dtype=dtype)
        responses = collect_corpus_responses(
            lm,
            data,
            languages,
            cache=out / "cache",
            units=units,
            pooling=[pooling, "active"] if lape else pooling,
            batch_size=batch_size,
        )
        scores = ExpertScores.from_responses(
            responses, pooling=pooling, negatives=_langs(negatives) if negatives else None
        )
        scores.save(out / "scores")
        lape_counts = {}
        if lape:
            for lang, lape_set in scores.lape_sets(responses).items():
                lape_set.save(out / "lape" / lang)
                lape_counts[lang] = len(lape_set)
        summary = scores.summary()
        layers: dict[str, dict[int, int]] = {}
        for lang in scores.languages:
            expert_set = scores.select(lang, k, method=select, threshold=threshold)  # type: ignore[arg-type]
            expert_set.save(out / "experts" / lang)
            layers[lang] = expert_set.counts_per_layer()
        payload = {
            "model": lm.identity(),
            "corpus": corpus,
            "sentences_per_language": len(data),
            "units": units,
            "pooling": pooling,
            "negatives": negatives,
            "selection": {"method": select, "k": k, "threshold": threshold},
            "languages": summary.to_dict(orient="records"),
            "experts_per_layer": layers,
            "lape_units": lape_counts,
        }
        (out / "summary.json").write_text(json.dumps(payload, indent=2))
        typer.echo(summary.to_string(index=False))
        typer.echo(f"\nexperts per layer (top {k}):")
        for lang, counts in layers.items():
            typer.echo(f"  {lang}: " + " ".join(f"L{layer}:{n}" for layer, n in sorted(counts.items())))
        if lape:
            typer.echo("LAPE units: " + ", ".join(f"{lang}:{n}" for lang, n in lape_counts.items()))
        typer.echo(f"\nwrote {out}/scores, {out}/experts/<lang>, {out}/summary.json")
    except Exception as err:
        _fail(err)


@bench_app.command("experts")
def bench_experts(
    json_out: Annotated[Path, typer.Option("--json", help="where to write the JSON report")],
    model: ModelOpt = "",
    corpus: CorpusOpt = "builtin",
    langs: LangsOpt = "en,es,de,fr,ja",
    per_lang: Annotated[int, typer.Option(help="sentences per language")] = 200,
    sklearn_units: Annotated[int, typer.Option(help="units timed with the sklearn loop (then extrapolated)")] = 300,
    batch_size: int = 16,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Time our vectorised AP scoring vs the sklearn per-unit loop, and pooled collection vs a plain forward."""
    try:
        from xlens.bench import bench_experts as run_bench

        report = run_bench(
            model=model or None,
            corpus=corpus,
            languages=_langs(langs),
            per_lang=per_lang,
            sklearn_units=sklearn_units,
            batch_size=batch_size,
            device=device,
            dtype=dtype,
        )
        _write_json(json_out, report)
        typer.echo(json.dumps(report, indent=2))
    except Exception as err:
        _fail(err)


@app.command()
def run(
    config: Annotated[Path | None, typer.Argument(help="TOML/YAML experiment config (optional)")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder (resumes what is already there)")] = Path(
        "runs/default"
    ),
    model: Annotated[str | None, typer.Option("--model", "-m", help="override the config's model")] = None,
    langs: Annotated[str | None, typer.Option("--langs", "-l", help="override languages, e.g. en,es,de")] = None,
    k: Annotated[str | None, typer.Option("--k", help="override k values, e.g. 100,1000")] = None,
    method: Annotated[str | None, typer.Option(help="force | aura | det0 | damp | lape | diffmean")] = None,
    find_corpus: Annotated[str | None, typer.Option(help="corpus spec where experts are found")] = None,
    eval_corpus: Annotated[str | None, typer.Option(help="corpus spec where they are evaluated")] = None,
    find_sentences: Annotated[int | None, typer.Option(help="sentences per language to find experts")] = None,
    eval_sentences: Annotated[int | None, typer.Option(help="sentences per language to evaluate")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of the sentence samples")] = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    figures: Annotated[bool, typer.Option(help="write figures and the HTML report")] = True,
) -> None:
    """The paper's experiment: experts -> interventions -> embeddings, alignment and retrieval per layer."""
    try:
        from xlens.experiment import ExperimentConfig, run_experiment, summarize

        cfg = ExperimentConfig.load(config) if config else ExperimentConfig()
        cfg = cfg.replace(
            model=model,
            languages=[c.strip() for c in langs.split(",") if c.strip()] if langs else None,
            k=[int(x) for x in k.split(",")] if k else None,
            method=method,
            find_corpus=find_corpus,
            eval_corpus=eval_corpus,
            find_sentences=find_sentences,
            eval_sentences=eval_sentences,
            seed=seed,
            device=device,
            dtype=dtype,
        )
        results = run_experiment(cfg, out)
        typer.echo(summarize(results))
        if figures:
            from xlens.report import write_report

            typer.echo(f"report: {write_report(out)}")
        typer.echo(f"wrote {out}/results.json, {out}/retrieval.parquet, {out}/alignment.parquet")
    except Exception as err:
        _fail(err)


@bench_app.command("retrieval")
def bench_retrieval(
    json_out: Annotated[Path, typer.Option("--json", help="where to write the JSON report")],
    flores: Annotated[Path, typer.Option(help="FLORES-200 devtest folder")] = Path("../shared/data/flores200/devtest"),
    run_out: Annotated[Path, typer.Option(help="folder of the timed end-to-end run")] = Path("runs/bench"),
    skip_run: Annotated[bool, typer.Option(help="time only the 204-language retrieval matrix")] = False,
    model: ModelOpt = "",
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Time the all-language FLORES retrieval matrix at one layer and an end-to-end run on the embedded default."""
    try:
        from xlens.bench import bench_retrieval as run_bench

        report = run_bench(
            flores=flores, run_out=run_out, skip_run=skip_run, model=model or None, device=device, dtype=dtype
        )
        _write_json(json_out, report)
        typer.echo(json.dumps(report, indent=2))
    except Exception as err:
        _fail(err)


@app.command()
def steer(
    experts_dir: Annotated[Path | None, typer.Option("--experts", help="folder written by `xlens experts`")] = None,
    lang: Annotated[str, typer.Option("--lang", help="target language of the intervention")] = "es",
    k: Annotated[str, typer.Option("--k", help="comma-separated k values; 0 is the baseline")] = "0,50,200,1000",
    method: Annotated[str, typer.Option(help="force | aura | det0 | damp | lape | diffmean")] = "force",
    prompts: Annotated[str, typer.Option(help="'builtin' or a text file with one prompt per line")] = "builtin",
    eval_corpus: Annotated[str, typer.Option(help="corpus spec of held-out sentences for perplexity")] = "builtin",
    eval_langs: Annotated[str | None, typer.Option(help="languages whose perplexity is measured")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="tokens generated per prompt")] = 20,
    alphas: Annotated[str, typer.Option(help="diffmean: comma-separated scales; 0 is the baseline")] = "0,1,2,4",
    json_out: Annotated[Path | None, typer.Option("--json", help="write the report as JSON")] = None,
    model: ModelOpt = "",
    seed: int = 0,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Generate with and without an intervention: target-language rate and perplexities before and after."""
    try:
        from xlens.models import load_model
        from xlens.steering import run_steer

        if method != "diffmean" and experts_dir is None:
            raise ValueError(f"--method {method} needs --experts DIR (run `xlens experts --out DIR` first)")
        lm = load_model(model or None, device=device, dtype=dtype)
        report = run_steer(
            lm,
            experts_dir,
            lang,
            k_values=[int(x) for x in k.split(",")],
            method=method,
            prompts=prompts,
            eval_corpus=eval_corpus,
            eval_langs=_langs(eval_langs) if eval_langs else None,
            max_new_tokens=max_new_tokens,
            alphas=[float(x) for x in alphas.split(",")],
            seed=seed,
        )
        typer.echo(format_steer(report))
        if json_out is not None:
            _write_json(json_out, report)
            typer.echo(f"wrote {json_out}")
    except Exception as err:
        _fail(err)


def format_steer(report: dict[str, Any]) -> str:
    """The before/after table of `xlens steer`: target-language rate and perplexity per language."""
    cfg = report["config"]
    strength = "alpha" if cfg["method"] == "diffmean" else "k"
    rows = [{strength: 0, **_steer_row(report["baseline"])}]
    rows += [{strength: run[strength], **_steer_row(run)} for run in report["runs"]]
    header = list(rows[0])
    lines = [
        f"{cfg['method']} on {cfg['lang']}: {cfg['prompts']} prompts x {cfg['max_new_tokens']} tokens; "
        f"perplexity on {cfg['eval_sentences']} held-out sentences",
        "  ".join(f"{h:>14}" for h in header),
    ]
    lines += [
        "  ".join(f"{row[h]:>14.3f}" if isinstance(row[h], float) else f"{row[h]:>14}" for h in header) for row in rows
    ]
    for example in report["runs"][-1]["examples"] if report["runs"] else []:
        lines.append(f"  {example['prompt']!r} -> {example['continuation']!r} [{example['language']}]")
    return "\n".join(lines)


def _steer_row(entry: dict[str, Any]) -> dict[str, Any]:
    return {"target_rate": entry["target_rate"], **{f"ppl_{lang[:3]}": v for lang, v in entry["perplexity"].items()}}


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="folder of an `xlens run`")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="HTML file (default RUN_DIR/report.html)")] = None,
) -> None:
    """One self-contained HTML page of a run: config, provenance, results tables and figures."""
    try:
        from xlens.report import write_report

        typer.echo(f"wrote {write_report(run_dir, out=out)}")
    except Exception as err:
        _fail(err)
