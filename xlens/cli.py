"""The ``xlens`` command line: every command names its model with ``--model`` and its data with a corpus spec.

Bad input ends a command with one ``error:`` line (exit code 2) before any model is loaded.
"""

from __future__ import annotations

import functools
import importlib
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec

import typer

from xlens._io import produced_by, write_json
from xlens.errors import InputError, XlensError
from xlens.interventions.registry import methods

if TYPE_CHECKING:
    from xlens.config import ExperimentConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, rich_markup_mode=None)
bench_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="Benchmarks that write JSON (run them on your own GPUs too)."
)
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
ForceOpt = Annotated[bool, typer.Option("--force", help="replace the results of another config in the folder")]
ParamOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="a setting KEY=VALUE (repeatable; VALUE is read as JSON when it parses)"),
]
_EXPECTED = (XlensError, ValueError, OSError, KeyError)
P = ParamSpec("P")


@app.callback()
def main(
    plugin: Annotated[
        list[str] | None,
        typer.Option("--plugin", help="import this module first (it may register intervention methods)"),
    ] = None,
) -> None:
    """Find language experts, intervene on them, measure cross-lingual alignment and retrieval."""
    for module in plugin or []:
        _import_plugin(module)


def _import_plugin(module: str) -> None:
    """Import a plugin module; what goes wrong is one ``error:`` line that says where the fault is."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is not None and (module == err.name or module.startswith(f"{err.name}.")):
            _fail(
                InputError(
                    f"--plugin {module}: no module {err.name!r} on the import path. A plugin must be importable: "
                    "for a module in the current folder run with PYTHONPATH=. (the xlens command does not look "
                    "there), or install it"
                )
            )
        _fail(InputError(f"--plugin {module} imports {err.name!r}, which is not installed"))
    except XlensError as err:  # a registration the registry refused (a taken name, a reserved setting)
        _fail(InputError(f"--plugin {module}: {err}"))
    except Exception as err:  # the plugin's own code failed while being imported
        _fail(InputError(f"--plugin {module} raised {type(err).__name__} when imported: {err}"))


def _fail(err: BaseException) -> None:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def guarded(command: Callable[P, None]) -> Callable[P, None]:
    """A command whose expected errors become one ``error:`` line and exit code 2 (put it under ``@app.command``)."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except typer.Exit:
            raise
        except _EXPECTED as err:
            _fail(err)

    return run


def _new_file(path: Path | None, force: bool) -> None:
    """Refuse to replace an existing output file unless asked (checked before any work starts)."""
    if path is not None and path.exists() and not force:
        raise InputError(f"{path} exists: pass --force to replace it, or choose another file")


def _langs(text: str) -> list[str]:
    from xlens.data.languages import resolve_language

    codes = [c.strip() for c in text.split(",") if c.strip()]
    if not codes:
        raise InputError("--langs is empty: give comma-separated codes such as en,es,de")
    return [resolve_language(c).flores for c in codes]


def _numbers(option: str, text: str | None, kind: type = int) -> list[Any] | None:
    if text is None:
        return None
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{option} must be comma-separated {kind.__name__}s, got {text!r}") from None


def _settings(pairs: list[str] | None) -> dict[str, Any]:
    """``--set KEY=VALUE`` options as a dict (values parsed as JSON where they parse, else kept as text)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set intervene.value=on_mean")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


@app.command()
@guarded
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
        "methods": ", ".join(methods()),
        "builtin_corpus": f"{len(corpus)} sentences x {len(corpus.languages)} languages: "
        + ", ".join(corpus.languages),
    }
    for key, value in facts.items():
        typer.echo(f"{key:>18}: {value}")
    if check:
        _smoke(model or None, corpus)


def _smoke(name: str | None, corpus: Any) -> None:
    from xlens.generation import generate
    from xlens.models import load_model

    start = time.perf_counter()
    lm = load_model(name)
    typer.echo(f"{'model':>18}: {lm!r} (loaded in {time.perf_counter() - start:.1f} s)")
    prompt = "The capital of France is"
    typer.echo(f"{'greedy':>18}: {prompt!r} -> {generate(lm, [prompt], 6)[0]!r}")
    sample = corpus.select(["eng_Latn", "spa_Latn", "jpn_Jpan"]).head(2)
    batch = lm.tokenize([s for lang in sample.languages for s in sample[lang]])
    typer.echo(f"{'corpus batch':>18}: tokens {tuple(batch.tokens.shape)}, real tokens {batch.lengths.tolist()}")


@app.command()
@guarded
def experts(
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")],
    model: ModelOpt = "",
    corpus: CorpusOpt = "builtin",
    langs: LangsOpt = "en,es,de,fr,ja",
    per_lang: Annotated[int, typer.Option(help="sentences per language (0: all)")] = 200,
    k: Annotated[int, typer.Option("--k", help="experts kept per language in each expert set")] = 1000,
    select: Annotated[str, typer.Option(help="top | per-block | top-bottom | threshold")] = "top",
    threshold: Annotated[float | None, typer.Option(help="AP threshold for --select threshold")] = None,
    units: Annotated[str, typer.Option(help="mlp | linear | resid | re:REGEX over hook names")] = "mlp",
    pooling: Annotated[str, typer.Option(help="mean | max | last | median | weighted")] = "mean",
    batch_size: Annotated[int, typer.Option(help="sentences per forward pass")] = 16,
    seed: Annotated[int, typer.Option(help="seed of the sentence sample")] = 0,
    negatives: Annotated[
        str | None, typer.Option(help="score against these languages only (e.g. en) instead of all the others")
    ] = None,
    lape: Annotated[bool, typer.Option(help="also rank LAPE language-specific units (writes OUT/lape/<lang>)")] = False,
    lape_top_rate: Annotated[float, typer.Option(help="share of all units LAPE keeps")] = 0.01,
    lape_counts: Annotated[
        str, typer.Option(help="gate: active = act_fn(gate) > 0, as the LAPE reference; post: the neuron > 0")
    ] = "gate",
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    force: ForceOpt = False,
) -> None:
    """Find language experts: score every unit by AP for each language against the others; write expert sets."""

    from xlens.runs.experts import ExpertsJob

    job = ExpertsJob(
        out=out,
        model=model or None,
        corpus=corpus,
        langs=tuple(_langs(langs)),
        per_lang=per_lang,
        k=k,
        select=select,
        threshold=threshold,
        units=units,
        pooling=pooling,
        batch_size=batch_size,
        seed=seed,
        negatives=tuple(_langs(negatives)) if negatives else None,
        lape=lape,
        lape_top_rate=lape_top_rate,
        lape_counts=lape_counts,
        device=device,
        dtype=dtype,
        force=force,
    )
    typer.echo(job.run())


@app.command()
@guarded
def run(
    config: Annotated[Path | None, typer.Argument(help="TOML/YAML experiment config (optional)")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder (resumes the same config)")] = Path(
        "runs/default"
    ),
    model: Annotated[str | None, typer.Option("--model", "-m", help="override the config's model")] = None,
    langs: Annotated[str | None, typer.Option("--langs", "-l", help="override languages, e.g. en,es,de")] = None,
    k: Annotated[str | None, typer.Option("--k", help="override intervene.k, e.g. 100,1000")] = None,
    method: Annotated[str | None, typer.Option(help=f"override intervene.method: {' | '.join(methods())}")] = None,
    find_corpus: Annotated[str | None, typer.Option(help="corpus spec where experts are found")] = None,
    eval_corpus: Annotated[str | None, typer.Option(help="corpus spec where they are evaluated")] = None,
    find_sentences: Annotated[int | None, typer.Option(help="sentences per language to find experts")] = None,
    eval_sentences: Annotated[int | None, typer.Option(help="sentences per language to evaluate")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of the sentence samples")] = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    settings: ParamOpt = None,
    force: ForceOpt = False,
    figures: Annotated[bool, typer.Option(help="write figures and the HTML report")] = True,
) -> None:
    """The paper's experiment: experts -> interventions -> embeddings, alignment and retrieval per layer."""

    from xlens.config import ExperimentConfig
    from xlens.runs.study import run_experiment

    cfg = ExperimentConfig.load(config) if config else ExperimentConfig()
    changes = {
        "model": model,
        "languages": [c.strip() for c in langs.split(",") if c.strip()] if langs else None,
        "intervene.method": method,
        "intervene.k": _numbers("--k", k),
        "find.corpus": find_corpus,
        "evaluate.corpus": eval_corpus,
        "find.sentences": find_sentences,
        "evaluate.sentences": eval_sentences,
        "seed": seed,
        "runtime.device": device,
        "runtime.dtype": dtype,
        **_settings(settings),
    }
    results = run_experiment(cfg.override(changes), out, force=force)
    typer.echo(results.summary())
    if figures and "retrieval" in results.config.evaluate.tasks:  # the report draws the retrieval task's figures
        from xlens.report import write_report

        typer.echo(f"report: {write_report(results)}")
    typer.echo(f"wrote {out}/results.json and its tables ({', '.join(f'{t}.parquet' for t in results.tables())})")


@app.command()
@guarded
def sweep(
    config: Annotated[Path, typer.Argument(help="TOML/YAML config whose [intervene] settings may be lists (a grid)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder (resumes the same config)")],
    settings: ParamOpt = None,
    force: ForceOpt = False,
    figures: Annotated[bool, typer.Option(help="write figures and the HTML report")] = True,
    executor: Annotated[
        str, typer.Option("--executor", help="local (this process) or ray (one worker per GPU of a Ray cluster)")
    ] = "local",
    address: Annotated[
        str | None, typer.Option("--address", help="Ray cluster address (host:port, auto); default: start one here")
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", help="Ray workers (default: the cluster's GPUs, or 1)")
    ] = None,
    keep_embeddings: Annotated[
        bool,
        typer.Option(
            "--keep-embeddings", help="Ray workers write embeddings into the run folder (it must be on a shared disk)"
        ),
    ] = False,
) -> None:
    """A grid of interventions with controls and bootstrap statistics: methods x settings x k x expert
    languages, one baseline, every condition computed once and cached (``xlens run`` is its one-point case)."""

    from xlens.config import ExperimentConfig
    from xlens.runs.executors import make_executor

    cfg = ExperimentConfig.load(config).override(_settings(settings))
    where = make_executor(executor, address=address, workers=workers, keep_embeddings=keep_embeddings)
    _study(cfg, out, executor=where, force=force, figures=figures)


def _study(config: ExperimentConfig, out: Path, *, executor: Any = None, force: bool, figures: bool = False) -> None:
    """Run a study, print its summary and, where it measured retrieval and ``figures``, write its report."""
    from xlens.runs.study import run_experiment

    results = run_experiment(config, out, executor=executor, force=force)
    typer.echo(results.study_summary())
    if figures and "retrieval" in results.config.evaluate.tasks:
        from xlens.report import write_report

        typer.echo(f"report: {write_report(results)}")
    written = [f"{name}.parquet" for name, table in results.tables().items() if len(table)]
    typer.echo(f"wrote {out}/results.json and its tables ({', '.join(written)})")


@app.command()
@guarded
def steer(
    experts_dir: Annotated[
        Path | None, typer.Option("--experts", help="folder written by `xlens experts` or `xlens run`")
    ] = None,
    lang: Annotated[str, typer.Option("--lang", help="target language of the intervention")] = "es",
    k: Annotated[str, typer.Option("--k", help="comma-separated k values; 0 is the baseline")] = "0,50,200,1000",
    method: Annotated[str, typer.Option(help=" | ".join(methods()))] = "force",
    settings: ParamOpt = None,
    prompts: Annotated[str, typer.Option(help="'builtin' or a text file with one prompt per line")] = "builtin",
    eval_corpus: Annotated[str, typer.Option(help="corpus spec of held-out sentences for perplexity")] = "builtin",
    eval_langs: Annotated[str | None, typer.Option(help="languages whose perplexity is measured")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="tokens generated per prompt")] = 20,
    alphas: Annotated[str, typer.Option(help="methods without k: comma-separated scales; 0 = baseline")] = "0,1,2,4",
    json_out: Annotated[Path | None, typer.Option("--json", help="write the report as JSON")] = None,
    model: ModelOpt = "",
    seed: int = 0,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    force: Annotated[bool, typer.Option("--force", help="replace an existing --json file")] = False,
) -> None:
    """Generate with and without an intervention: target-language rate and perplexities before and after.

    Method settings go with --set, e.g. ``--method force --set value=on_mean`` or ``--method damp --set alpha=0.2``.
    """

    from xlens.interventions.registry import spec_class
    from xlens.models import load_model
    from xlens.runs.steer import prepare_steer

    _new_file(json_out, force)
    spec = spec_class(method).from_dict(_settings(settings))
    if "experts" in spec.needs and (experts_dir is None or not experts_dir.exists()):
        raise InputError(f"--method {method} needs --experts DIR, a folder of `xlens experts` or `xlens run`")
    plan = prepare_steer(
        experts_dir,
        lang,
        k_values=_numbers("--k", k) or [0],
        method=spec,
        prompts=prompts,
        eval_corpus=eval_corpus,
        eval_langs=_langs(eval_langs) if eval_langs else None,
        max_new_tokens=max_new_tokens,
        alphas=_numbers("--alphas", alphas, float) or [0.0],
        seed=seed,
    )
    report = plan.run(load_model(model or None, device=device, dtype=dtype))
    typer.echo(format_steer(report))
    if json_out is not None:
        write_json(json_out, produced_by() | report)
        typer.echo(f"wrote {json_out}")


def format_steer(report: dict[str, Any]) -> str:
    """The before/after table of `xlens steer`: target-language rate and perplexity per language."""
    cfg = report["config"]
    strength = "k" if "k_values" in cfg else "alpha"
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
@guarded
def transfer(
    config: Annotated[Path, typer.Argument(help="TOML/YAML experiment config (its transfer section)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder (resumes the same config)")],
    targets: Annotated[
        str | None, typer.Option("--targets", help="override transfer.targets: 'all' or codes such as en,es,de")
    ] = None,
    layer: Annotated[
        list[int] | None, typer.Option("--layer", help="override transfer.layers: an embedding layer (repeatable)")
    ] = None,
    settings: ParamOpt = None,
    force: ForceOpt = False,
) -> None:
    """The study of CONFIG with the transfer task alone (``[evaluate] tasks = ["transfer"]`` in ``xlens sweep``):
    a SIB-200 topic probe trained on the source language's embeddings, tested on every target's, before and after
    each intervention of the config's grid and its controls (accuracy, macro-F1, paired intervals)."""

    from xlens.config import ExperimentConfig

    chosen = None
    if targets is not None:
        chosen = "all" if targets.strip() == "all" else [c.strip() for c in targets.split(",") if c.strip()]
        if not chosen:
            raise InputError("--targets is empty: give 'all' or comma-separated codes such as es,de")
    changes = {
        "evaluate.tasks": ["transfer"],
        "evaluate.transfer.targets": chosen,
        "evaluate.transfer.layers": list(layer) if layer else None,
        **_settings(settings),
    }
    _study(ExperimentConfig.load(config).override(changes), out, force=force)


@app.command()
@guarded
def translate(
    config: Annotated[Path, typer.Argument(help="TOML/YAML experiment config with a translate section")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder (resumes the same config)")],
    directions: Annotated[
        str | None, typer.Option(help="override translate.directions, e.g. en-es,es-en (SOURCE-TARGET)")
    ] = None,
    sentences: Annotated[int | None, typer.Option(help="override translate.sentences (test sentences)")] = None,
    shots: Annotated[int | None, typer.Option(help="override translate.shots (examples in every prompt)")] = None,
    settings: ParamOpt = None,
    force: ForceOpt = False,
) -> None:
    """The study of CONFIG with the translation task alone (``[evaluate] tasks = ["translation"]`` in ``xlens
    sweep``): few-shot translation of FLORES-200 sentences before and after each intervention of the config's grid
    and its controls (chrF++, BLEU, target-language share, paired intervals on sentence-level chrF++)."""

    from xlens.config import ExperimentConfig

    changes = {
        "evaluate.tasks": ["translation"],
        "evaluate.translation.directions": [d.strip() for d in directions.split(",") if d.strip()]
        if directions
        else None,
        "evaluate.translation.sentences": sentences,
        "evaluate.translation.shots": shots,
        **_settings(settings),
    }
    _study(ExperimentConfig.load(config).override(changes), out, force=force)


@app.command()
@guarded
def report(
    run_dir: Annotated[Path, typer.Argument(help="folder of an `xlens run`")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="HTML file (default RUN_DIR/report.html)")] = None,
) -> None:
    """One self-contained HTML page of a run: config, provenance, results tables and figures."""

    from xlens.report import write_report
    from xlens.runs.results import RunResults

    typer.echo(f"wrote {write_report(RunResults.load(run_dir), out=out)}")


@app.command("choose-k")
@guarded
def choose_k(
    experts_dir: Annotated[Path, typer.Option("--experts", help="folder written by `xlens experts` or `xlens run`")],
    lang: Annotated[str, typer.Option("--lang", help="target language of the intervention")],
    k: Annotated[str, typer.Option("--k", help="comma-separated k values (0, the baseline, is always run)")] = (
        "50,200,1000,3000"
    ),
    samples: Annotated[int, typer.Option(help="sampled continuations per k (the prompts cycled)")] = 60,
    min_rate: Annotated[float, typer.Option(help="target-language rate the chosen k must reach")] = 0.5,
    max_ppl_ratio: Annotated[float, typer.Option(help="perplexity ratio the chosen k may not exceed")] = 1.5,
    method: Annotated[str, typer.Option(help=" | ".join(methods()))] = "force",
    settings: ParamOpt = None,
    prompts: Annotated[str, typer.Option(help="'builtin' or a text file with one prompt per line")] = "builtin",
    eval_corpus: Annotated[str, typer.Option(help="corpus spec of held-out sentences for perplexity")] = "builtin",
    eval_langs: Annotated[str | None, typer.Option(help="languages whose perplexity is bounded")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="tokens generated per continuation")] = 20,
    temperature: float = 1.0,
    top_p: Annotated[float, typer.Option(help="nucleus of the sampling")] = 0.9,
    json_out: Annotated[Path, typer.Option("--json", help="where to write the report")] = Path("choose-k.json"),
    figure: Annotated[Path | None, typer.Option(help="where to write the figure (.html, .png, .pdf, .svg)")] = None,
    model: ModelOpt = "",
    seed: int = 0,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    force: Annotated[bool, typer.Option("--force", help="replace existing --json and --figure files")] = False,
) -> None:
    """Pick k as the paper does: the smallest k whose sampled continuations reach a target-language rate with a
    bounded perplexity cost on held-out text."""

    from xlens.interventions.registry import spec_class
    from xlens.models import load_model
    from xlens.runs.steer import prepare_choose_k
    from xlens.viz.export import save_figure
    from xlens.viz.steering import choose_k_figure

    _check_outputs(json_out, figure, force)
    if not experts_dir.exists():
        raise InputError(f"--experts {experts_dir} does not exist: pass a folder of `xlens experts` or `xlens run`")
    plan = prepare_choose_k(
        experts_dir,
        lang,
        _numbers("--k", k) or [],
        samples=samples,
        min_rate=min_rate,
        max_perplexity_ratio=max_ppl_ratio,
        method=spec_class(method).from_dict(_settings(settings)),
        prompts=prompts,
        eval_corpus=eval_corpus,
        eval_langs=_langs(eval_langs) if eval_langs else None,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
    )
    report = plan.run(load_model(model or None, device=device, dtype=dtype))
    _echo_choice(report)
    write_json(json_out, produced_by() | report)
    typer.echo(f"wrote {json_out}")
    if figure is not None:
        typer.echo(f"wrote {save_figure(choose_k_figure(report), figure)}")


def _check_outputs(json_out: Path, figure: Path | None, force: bool) -> None:
    """The report and figure files are new (or replaced with --force), the figure's format one we write."""
    from xlens.viz.export import check_figure_path

    _new_file(json_out, force)
    _new_file(figure, force)
    if figure is not None:
        check_figure_path(figure)


def _echo_choice(report: dict[str, Any]) -> None:
    """choose-k's rows and its reason, one line each."""
    for row in report["rows"]:
        low, high = row["target_rate_interval"]
        typer.echo(
            f"k = {row['k']:>6}  rate {row['target_rate']:.3f} [{low:.3f}, {high:.3f}]  "
            f"ppl ratio {row['worst_perplexity_ratio']:.3f}  {'meets' if row['meets'] else ''}"
        )
    typer.echo(report["why"])


@bench_app.command("experts")
@guarded
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
    force: Annotated[bool, typer.Option("--force", help="replace an existing --json file")] = False,
) -> None:
    """Time our vectorised AP scoring vs the sklearn per-unit loop, and pooled collection vs a plain forward."""

    from xlens.bench.experts import bench_experts as run_bench

    _new_file(json_out, force)
    languages = _langs(langs)
    report = run_bench(model or None, corpus, languages, per_lang, sklearn_units, batch_size, device, dtype)
    write_json(json_out, produced_by() | report)
    typer.echo(json.dumps(report, indent=2))


@bench_app.command("retrieval")
@guarded
def bench_retrieval(
    json_out: Annotated[Path, typer.Option("--json", help="where to write the JSON report")],
    flores: Annotated[Path, typer.Option(help="FLORES-200 devtest folder")] = Path("../shared/data/flores200/devtest"),
    run_out: Annotated[Path, typer.Option(help="folder of the timed end-to-end run")] = Path("runs/bench"),
    skip_run: Annotated[bool, typer.Option(help="time only the 204-language retrieval matrix")] = False,
    model: ModelOpt = "",
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="replace an existing --json file and the end-to-end run's folder")
    ] = False,
) -> None:
    """Time the all-language FLORES retrieval matrix at one layer and an end-to-end run on the embedded default."""

    from xlens.bench.retrieval import bench_retrieval as run_bench

    _new_file(json_out, force)
    report = run_bench(
        flores=flores,
        run_out=run_out,
        skip_run=skip_run,
        model=model or None,
        device=device,
        dtype=dtype,
        force=force,
    )
    write_json(json_out, produced_by() | report)
    typer.echo(json.dumps(report, indent=2))


@bench_app.command("gpu")
@guarded
def bench_gpu(
    json_out: Annotated[Path, typer.Option("--json", help="where to write the JSON report")],
    shapes: Annotated[
        str, typer.Option(help="random-weight model shapes: gemma3-270m-shape, gemma3-1b-shape (comma-separated)")
    ] = "gemma3-270m-shape,gemma3-1b-shape",
    sentences: Annotated[int, typer.Option(help="sentences (built-in corpus, repeated)")] = 512,
    units: Annotated[int, typer.Option(help="MLP units forced in (d)")] = 2000,
    batch_size: Annotated[int | None, typer.Option(help="sentences per batch at most (default: by device)")] = None,
    max_tokens: Annotated[int, typer.Option(help="padded tokens per batch at most")] = 8192,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    force: Annotated[bool, typer.Option("--force", help="replace an existing --json file")] = False,
) -> None:
    """Tokens per second of a plain Hugging Face forward against xlens embeddings, pooled responses and a forced
    intervention on the same batches, with peak GPU memory (runs on CPU too)."""

    from xlens.bench.throughput import THROUGHPUT_SHAPES
    from xlens.bench.throughput import bench_gpu as run_bench

    _new_file(json_out, force)
    chosen = [s.strip() for s in shapes.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in THROUGHPUT_SHAPES]
    if unknown or not chosen:
        raise InputError(f"--shapes {shapes!r}: choose from {', '.join(THROUGHPUT_SHAPES)}")
    report = run_bench(chosen, sentences, units, batch_size, max_tokens, device=device, dtype=dtype)
    write_json(json_out, produced_by() | report)
    typer.echo(json.dumps(report, indent=2))


@bench_app.command("generate")
@guarded
def bench_generate(
    json_out: Annotated[Path, typer.Option("--json", help="where to write the JSON report")],
    model: ModelOpt = "",
    prompts: Annotated[int, typer.Option(help="prompts per regime (short openings; few-shot translations)")] = 8,
    new_tokens: Annotated[int, typer.Option(help="tokens generated per prompt")] = 64,
    batch_size: Annotated[int, typer.Option(help="prompts per batch")] = 8,
    shots: Annotated[int, typer.Option(help="examples in each few-shot prompt")] = 3,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    force: Annotated[bool, typer.Option("--force", help="replace an existing --json file")] = False,
) -> None:
    """New tokens per second of KV-cached generation against the full-forward loop, without and under a force
    intervention, on short and on few-shot prompts, and whether both loops give the same tokens."""

    from xlens.bench.generate import bench_generate as run_bench

    _new_file(json_out, force)
    for name, value in (("--prompts", prompts), ("--new-tokens", new_tokens), ("--batch-size", batch_size)):
        if value < 1:
            raise InputError(f"{name} must be >= 1, got {value}")
    if shots < 0:
        raise InputError(f"--shots must be >= 0, got {shots}")
    report = run_bench(model or None, prompts, new_tokens, batch_size, shots, device, dtype)
    write_json(json_out, produced_by() | report)
    typer.echo(json.dumps(report, indent=2))


@bench_app.command("sweep")
@guarded
def bench_sweep(
    json_out: Annotated[Path, typer.Option("--json", help="where to write the JSON report")],
    languages: Annotated[int, typer.Option(help="languages of the synthetic sweep")] = 5,
    layers: Annotated[int, typer.Option(help="embedding layers")] = 19,
    interventions: Annotated[int, typer.Option(help="interventions, each compared with the baseline")] = 10,
    seeds: Annotated[int, typer.Option(help="random controls per intervention")] = 3,
    sentences: Annotated[int, typer.Option(help="evaluation sentences per language")] = 500,
    resamples: Annotated[int, typer.Option(help="bootstrap resamples")] = 1000,
    force: Annotated[bool, typer.Option("--force", help="replace an existing --json file")] = False,
) -> None:
    """Time a sweep's statistics (paired bootstrap of every intervention against the baseline and its random
    controls, centroid correlation) on synthetic ranks."""

    from xlens.bench.sweep import bench_sweep as run_bench

    _new_file(json_out, force)
    report = run_bench(languages, layers, interventions, seeds, sentences, resamples)
    write_json(json_out, produced_by() | report)
    typer.echo(json.dumps(report, indent=2))


@bench_app.command("study")
@guarded
def bench_study(
    config: Annotated[Path, typer.Argument(help="TOML/YAML config of the study (its [evaluate] tasks are timed)")],
    json_out: Annotated[Path, typer.Option("--json", help="where to write the JSON report")],
    settings: ParamOpt = None,
    force: Annotated[bool, typer.Option("--force", help="replace an existing --json file")] = False,
) -> None:
    """One study of the config's tasks against one study per task: wall time, forward-pass time and embedding
    artefacts (shared forward passes), each study in a fresh temporary folder."""
    from xlens.bench.study import bench_study as run_bench
    from xlens.config import ExperimentConfig

    _new_file(json_out, force)
    cfg = ExperimentConfig.load(config).override(_settings(settings))
    report = run_bench(cfg, list(cfg.evaluate.tasks))
    write_json(json_out, produced_by() | report)
    typer.echo(json.dumps({k: report[k] for k in ("together", "apart_total", "wall_ratio")}, indent=2))


@bench_app.command("check")
@guarded
def bench_check(
    json_out: Annotated[
        Path | None, typer.Option("--json", help="where to write the JSON report (default: gpu-<device>.json)")
    ] = None,
    json_dir: Annotated[Path, typer.Option(help="the default --json file's folder")] = Path("bench"),
    cpu: Annotated[bool, typer.Option("--cpu", help="the same steps on the CPU with the smallest shapes")] = False,
    sections: Annotated[
        str, typer.Option(help="comma-separated, run in this order")
    ] = "correctness,study,throughput,generation",
    budget_s: Annotated[float, typer.Option(help="skip what would start after this many seconds")] = 420.0,
    commit: Annotated[str | None, typer.Option(help="the commit checked, recorded in the report")] = None,
    force: Annotated[bool, typer.Option("--force", help="replace an existing --json file")] = False,
) -> None:
    """The GPU proof: correctness on the device against the CPU for tiny models of every architecture, throughput
    and memory at the paper's shapes, generation speed, a study end to end (scripts/gpu_check.sh calls this).
    Exits 1 when a correctness or study check fails."""

    from xlens.bench.check import CheckSettings, device_slug, run_check

    path = json_out or json_dir / f"gpu-{device_slug(cpu)}.json"
    _new_file(path, force)
    chosen = [s.strip() for s in sections.split(",") if s.strip()]
    settings = CheckSettings.smallest(budget_s) if cpu else CheckSettings(budget_s=budget_s)
    report = run_check(path, settings, sections=chosen, commit=commit)
    verdict = "passed" if report["passed"] else f"FAILED: {json.dumps(report['failed'] + report['errors'])}"
    typer.echo(f"wrote {path} ({report['wall_s']:.0f} s): {verdict}")
    if not report["passed"]:
        raise typer.Exit(1)
