"""The ``semcache`` command."""

from __future__ import annotations

import logging
import os
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


def _settings(**overrides: object):  # type: ignore[no-untyped-def]
    from gateway.config import Settings

    return Settings(**{k: v for k, v in overrides.items() if v is not None})


@app.command()
def serve(
    upstream: Annotated[
        str | None, typer.Option(help="Backend OpenAI base URL, e.g. http://localhost:8000/v1")
    ] = None,
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
    database_url: Annotated[str | None, typer.Option(help="SQLAlchemy URL of the store")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Pure proxy, no caching")] = False,
    config: Annotated[str | None, typer.Option(help="YAML settings file (SEMCACHE_CONFIG)")] = None,
    workers: Annotated[int, typer.Option(
        min=1, help="Worker processes on this host; they share the store like replicas "
        "(each keeps its own indexes; on a GPU one process embeds for all of them, see "
        "SEMCACHE_EMBEDDING_SHARED)")] = 1,
) -> None:
    """Run the gateway."""
    import uvicorn

    from gateway.app import create_app
    from gateway.httpserver import bounded_protocol

    if config:
        os.environ["SEMCACHE_CONFIG"] = config
    overrides = {
        "upstream_url": upstream, "host": host, "port": port, "database_url": database_url,
        "cache_enabled": False if no_cache else None,
    }
    settings = _settings(**overrides)
    from gateway.logs import configure

    configure(settings.log_level)
    if workers == 1:
        uvicorn.run(
            create_app(settings), host=settings.host, port=settings.port,
            log_level=settings.log_level, proxy_headers=False, log_config=None,
            http=bounded_protocol(settings.client_header_timeout_s),
        )
        return
    if settings.index_snapshot_dir is not None:
        raise typer.BadParameter(
            "SEMCACHE_INDEX_SNAPSHOT_DIR cannot be shared by several workers; unset it "
            "(or run one replica per snapshot directory)", param_hint="--workers")
    if settings.cache_enabled and settings.auto_migrate:
        from gateway.cache.schema import run_migrations

        run_migrations(settings.database_url)  # once, before the workers start
    # the workers build their settings from the environment: pass the flags on through it
    for name, value in overrides.items():
        if value is not None:
            os.environ[f"SEMCACHE_{name.upper()}"] = str(value).lower() \
                if isinstance(value, bool) else str(value)
    os.environ["SEMCACHE_AUTO_MIGRATE"] = "false"
    os.environ["SEMCACHE_CLIENT_HEADER_TIMEOUT_S"] = str(settings.client_header_timeout_s)
    if settings.replica_sync is None:
        os.environ["SEMCACHE_REPLICA_SYNC"] = "true"
    from gateway.embedding.process import EmbeddingProcess, wanted

    embedding = None
    if wanted(settings, workers):  # one process embeds for all the workers, with all the cores
        try:
            embedding = EmbeddingProcess()
        except RuntimeError as exc:
            typer.echo(f"semcache serve: {exc}", err=True)
            raise typer.Exit(1) from exc
        os.environ["SEMCACHE_EMBEDDING_SERVER"] = embedding.path
    elif settings.embedding_threads == 0:  # the workers share the cores, not each takes all
        os.environ["SEMCACHE_EMBEDDING_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    try:
        uvicorn.run(
            "gateway.app:app_from_environment", factory=True, workers=workers,
            host=settings.host, port=settings.port, log_level=settings.log_level,
            proxy_headers=False, log_config=None,
            http="gateway.httpserver:HeadDeadlineFromEnvironment",  # workers import it by name
        )
    finally:
        if embedding is not None:
            embedding.stop()


@app.command()
def demo(
    database_url: Annotated[
        str | None, typer.Option(help="Store to use (default: a temporary SQLite file)")
    ] = None,
    real_model: Annotated[bool, typer.Option(
        "--real-model", help="A real LLM (SmolLM2-135M on llama.cpp, CPU) instead of the fake "
        "one; needs SEMCACHE_REAL_MODEL=1 bash scripts/install")] = False,
) -> None:
    """Gateway + built-in fake LLM + a mixed workload; prints hits per category."""
    logging.basicConfig(level="WARNING")
    from gateway.devtools.real_model import RealModelUnavailable
    from gateway.tools.demo import run

    try:
        run(database_url, echo=typer.echo, real_model=real_model)
    except RealModelUnavailable as exc:
        typer.echo(f"--real-model: {exc}", err=True)
        raise typer.Exit(2) from exc


def _evaluate(pairs: str, overlay: str | None):  # type: ignore[no-untyped-def]
    """Load pairs, categories and the model as the gateway does; evaluate with a progress bar."""
    from pathlib import Path

    from rich.progress import Progress

    from gateway.categories import Classifier, load_categories
    from gateway.embedding import load_embedder
    from gateway.resources import categories_dir
    from gateway.tools.evaluation import PairsFileError, evaluate, load_pairs

    settings = _settings()
    try:
        data = load_pairs(Path(pairs))
    except (OSError, PairsFileError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    cats = load_categories(
        settings.categories_dir or categories_dir(), Path(overlay) if overlay else None
    )
    embedder = load_embedder(settings.embedding_model, settings.embedding_device,
                             settings.embedding_backend, settings.embedding_cache_dir,
                             settings.embedding_threads)
    exemplars = {n: embedder.encode(c.exemplars) for n, c in cats.items()}
    classifier = Classifier(cats, exemplars, settings.classify_min_similarity)
    with Progress(transient=True) as bar:
        tasks: dict[str, object] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)  # type: ignore[arg-type]

        from gateway.cache.verifier.calibrated import CALIBRATION, load_calibrator

        return evaluate(data, embedder, cats, classifier, progress=progress,
                        margin=settings.classify_margin,
                        calibrator=load_calibrator(settings.verifier_calibration or CALIBRATION))


def _print_report(report) -> None:  # type: ignore[no-untyped-def]
    def front(p: float | None) -> str:
        return f"{p:>9.3f}" if p is not None else f"{'-':>9}"

    typer.echo(f"{'category':14}{'pairs':>6}{'thr':>6}{'P sim':>8}{'R sim':>8}{'P ver':>8}"
               f"{'R ver':>8}{'frontier':>9}{'P ver 95% CI':>16}")
    for c in report.categories:
        s, v = c.similarity_only, c.verified
        lo, hi = v.precision_ci
        typer.echo(f"{c.name:14}{c.pairs:>6}{c.threshold:>6.2f}{s.precision:>8.3f}"
                   f"{s.recall:>8.3f}{v.precision:>8.3f}{v.recall:>8.3f}"
                   f"{front(c.frontier_precision)}{f'{lo:.3f}-{hi:.3f}':>16}")
    s, v = report.overall_similarity_only, report.overall_verified
    lo, hi = v.precision_ci
    typer.echo(f"{'all':14}{report.pairs:>6}{'':>6}{s.precision:>8.3f}{s.recall:>8.3f}"
               f"{v.precision:>8.3f}{v.recall:>8.3f}{front(report.overall_frontier_precision)}"
               f"{f'{lo:.3f}-{hi:.3f}':>16}")
    typer.echo("frontier: the best precision a similarity threshold alone reaches at the "
               "verified recall")
    g = report.best_global_threshold
    typer.echo(f"one global threshold, no verifier: best F1 at {g['threshold_best_f1']:.2f} "
               f"(P {g['precision']:.3f}, R {g['recall']:.3f}); similarity AUC {report.auc:.3f}")
    if report.exact_only:
        typer.echo(f"{report.exact_only} pairs with a text the model cannot read whole: exact "
                   "repeats only, as the gateway serves them")


@app.command("eval")
def eval_(
    pairs: Annotated[str, typer.Argument(help="JSONL of {a, b, same, category?}")],
    out: Annotated[str, typer.Option(help="Where the JSON report goes")] = "eval-report.json",
    plots: Annotated[str | None, typer.Option(help="Directory for PNG plots")] = "eval-plots",
    overlay: Annotated[str | None, typer.Option(help="Category overlay to evaluate")] = None,
) -> None:
    """Precision / recall per category, with and without the verifier, across thresholds."""
    import json
    from pathlib import Path

    report = _evaluate(pairs, overlay)
    Path(out).write_text(json.dumps(report.to_json(), indent=2, default=float))
    _print_report(report)
    typer.echo(f"report: {out}")
    if plots:
        try:
            from gateway.tools.tuning import plot

            for path in plot(report, Path(plots)):
                typer.echo(f"plot: {path}")
        except ImportError:
            typer.echo("plots skipped: install matplotlib (pip install 'semcache[eval]')")


@app.command()
def tune(
    pairs: Annotated[str, typer.Argument(help="JSONL of {a, b, same, category?}")],
    target_precision: Annotated[float, typer.Option(min=0.5, max=1.0)] = 0.95,
    max_wrong_rate: Annotated[float | None, typer.Option(
        min=0.0001, max=0.5, help="Move categories to the calibrated verifier: the operating "
        "point whose wrong-hit rate is at most this with 95% confidence")] = None,
    out: Annotated[str, typer.Option(help="Overlay file to write")] = "categories-overlay.yaml",
    overlay: Annotated[str | None, typer.Option(help="Overlay to start from")] = None,
) -> None:
    """Per-category thresholds reaching the target precision with the most recall -> overlay;
    with --max-wrong-rate, per-category operating points of the calibrated verifier instead."""
    from pathlib import Path

    from gateway.categories import load_categories
    from gateway.resources import categories_dir
    from gateway.tools.tuning import (
        choose_operating_points,
        choose_thresholds,
        write_operating_points,
        write_overlay,
    )

    report = _evaluate(pairs, overlay)
    settings = _settings()
    cats = load_categories(settings.categories_dir or categories_dir(),
                           Path(overlay) if overlay else None)
    if max_wrong_rate is not None:
        points = choose_operating_points(report, max_wrong_rate)
        typer.echo(f"{'category':14}{'min P':>9}{'served':>8}{'wrong':>7}{'bound':>8}{'R':>8}")
        for pt in points:
            if pt.min_probability is None:
                why = (f"too few pairs: {pt.needed} served pairs with no wrong hit would be "
                       "needed" if pt.needed else "no cut-off reaches the rate")
                typer.echo(f"{pt.category:14}{'-':>9}  ({why}; setting kept)")
                continue
            typer.echo(f"{pt.category:14}{pt.min_probability:>9.4f}{pt.served:>8}{pt.wrong:>7}"
                       f"{pt.wrong_upper:>8.4f}{pt.recall:>8.3f}")
        write_operating_points(points, max_wrong_rate, Path(out), cats,
                               Path(overlay) if overlay else None)
    else:
        choices = choose_thresholds(report, target_precision)
        typer.echo(f"{'category':14}{'before':>8}{'after':>8}{'P':>8}{'R':>8}")
        for c in choices:
            flag = "" if c.reached else f"  (target {target_precision} not reached: strictest kept)"
            typer.echo(f"{c.category:14}{c.before:>8.2f}{c.after:>8.2f}{c.precision:>8.3f}"
                       f"{c.recall:>8.3f}{flag}")
        write_overlay(choices, Path(out), cats, Path(overlay) if overlay else None)
    typer.echo(f"overlay: {out}  (use with SEMCACHE_CATEGORIES_OVERLAY={out})")


@app.command()
def replay(
    trace: Annotated[str, typer.Argument(help="JSONL trace: {query|messages, t?, label?, ...}")],
    url: Annotated[str | None, typer.Option(help="A running gateway; default: in process")] = None,
    speed: Annotated[float, typer.Option(help="Time scale for traces with t (2 = twice as fast)")] = 1.0,
    concurrency: Annotated[int, typer.Option(min=1)] = 8,
) -> None:
    """Replay a request trace; hit rate per category, latency percentiles, precision."""
    import asyncio
    from contextlib import nullcontext
    from pathlib import Path

    from rich.progress import Progress

    from gateway.tools.demo import local_stack
    from gateway.tools.trace_replay import TraceError, load_trace
    from gateway.tools.trace_replay import replay as run_replay

    try:
        items = load_trace(Path(trace))
    except (OSError, TraceError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    with (nullcontext(url) if url else local_stack()) as base, Progress(transient=True) as bar:
        task = bar.add_task("replaying", total=len(items))
        report = asyncio.run(run_replay(
            items, base, speed=speed, concurrency=concurrency,
            progress=lambda n: bar.update(task, completed=n)))
    typer.echo(f"{'category':14}{'requests':>9}{'hits':>6}{'hit rate':>10}{'precision':>10}")
    for name, c in sorted(report.categories.items()):
        prec = f"{c.right_hits / c.labeled_hits:.3f}" if c.labeled_hits else "-"
        typer.echo(f"{name:14}{c.requests:>9}{c.hits:>6}{c.hits / max(1, c.requests):>10.1%}{prec:>10}")
    overall = f"{report.precision:.3f}" if report.precision is not None else "-"
    typer.echo(f"{'all':14}{report.requests:>9}{'':>6}{report.hit_rate:>10.1%}{overall:>10}")
    for outcome, p in sorted(report.latency_ms.items()):
        typer.echo(f"latency {outcome:6} n={int(p['n']):5}  p50 {p['p50']:.1f} ms  "
                   f"p95 {p['p95']:.1f} ms  p99 {p['p99']:.1f} ms")
    typer.echo(f"errors: {report.errors}   wall time: {report.seconds:.1f} s")


@app.command()
def migrate(
    database_url: Annotated[str | None, typer.Option(help="SQLAlchemy URL of the store")] = None,
) -> None:
    """Create or upgrade the store's schema (Alembic ``upgrade head``)."""
    from gateway.cache.schema import run_migrations

    settings = _settings(database_url=database_url)
    run_migrations(settings.database_url)
    typer.echo(f"schema up to date: {settings.database_url.split('@')[-1]}")


@app.command("fake-upstream")
def fake_upstream(
    host: str = "127.0.0.1",
    port: int = 8000,
    chunk_delay_ms: Annotated[float, typer.Option(help="Delay between stream chunks")] = 20.0,
    capacity: Annotated[int | None, typer.Option(help="Requests generated at once (queue beyond)")] = None,
    service_time_ms: Annotated[float, typer.Option(help="Time each request takes with --capacity")] = 0.0,
) -> None:
    """Run the deterministic fake LLM (an OpenAI-compatible server for demos and tests)."""
    import uvicorn

    from gateway.devtools.fake_upstream import create_fake_app

    app = create_fake_app(chunk_delay_s=chunk_delay_ms / 1000, capacity=capacity,
                          service_time_s=service_time_ms / 1000)
    uvicorn.run(app, host=host, port=port, log_level="warning")


if __name__ == "__main__":
    app()
