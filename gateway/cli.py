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
) -> None:
    """Run the gateway."""
    import uvicorn

    from gateway.app import create_app

    if config:
        os.environ["SEMCACHE_CONFIG"] = config
    settings = _settings(
        upstream_url=upstream, host=host, port=port, database_url=database_url,
        cache_enabled=False if no_cache else None,
    )
    from gateway.logs import configure

    configure(settings.log_level)
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port,
        log_level=settings.log_level, proxy_headers=False, log_config=None,
    )


@app.command()
def demo(
    database_url: Annotated[
        str | None, typer.Option(help="Store to use (default: a temporary SQLite file)")
    ] = None,
) -> None:
    """Gateway + built-in fake LLM + a mixed workload; prints hits per category."""
    logging.basicConfig(level="WARNING")
    from gateway.demo import run

    run(database_url, echo=typer.echo)


@app.command("eval")
def eval_(
    pairs: Annotated[str, typer.Argument(help="JSONL of {a, b, same, category?}")],
    out: Annotated[str, typer.Option(help="Where the JSON report goes")] = "eval-report.json",
    overlay: Annotated[str | None, typer.Option(help="Category overlay to evaluate")] = None,
) -> None:
    """Precision / recall per category, with and without the verifier, across thresholds."""
    import json
    from pathlib import Path

    from gateway.categories import Classifier, load_categories
    from gateway.embedding import SentenceTransformerEmbedder
    from gateway.evaluation import PairsFileError, evaluate, load_pairs
    from gateway.resources import categories_dir

    settings = _settings()
    try:
        data = load_pairs(Path(pairs))
    except (OSError, PairsFileError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    cats = load_categories(
        settings.categories_dir or categories_dir(), Path(overlay) if overlay else None
    )
    embedder = SentenceTransformerEmbedder(settings.embedding_model, settings.embedding_device)
    exemplars = {n: embedder.encode(c.exemplars) for n, c in cats.items()}
    classifier = Classifier(cats, exemplars, settings.classify_min_similarity)
    report = evaluate(data, embedder, cats, classifier)
    Path(out).write_text(json.dumps(report.to_json(), indent=2, default=float))
    typer.echo(f"{'category':14}{'pairs':>6}{'thr':>6}{'P sim':>8}{'R sim':>8}{'P ver':>8}{'R ver':>8}")
    for c in report.categories:
        s, v = c.similarity_only, c.verified
        typer.echo(f"{c.name:14}{c.pairs:>6}{c.threshold:>6.2f}{s.precision:>8.3f}"
                   f"{s.recall:>8.3f}{v.precision:>8.3f}{v.recall:>8.3f}")
    s, v = report.overall_similarity_only, report.overall_verified
    typer.echo(f"{'all':14}{report.pairs:>6}{'':>6}{s.precision:>8.3f}{s.recall:>8.3f}"
               f"{v.precision:>8.3f}{v.recall:>8.3f}")
    typer.echo(f"report: {out}")


@app.command()
def migrate(
    database_url: Annotated[str | None, typer.Option(help="SQLAlchemy URL of the store")] = None,
) -> None:
    """Create or upgrade the store's schema (Alembic ``upgrade head``)."""
    from gateway.cache.store import run_migrations

    settings = _settings(database_url=database_url)
    run_migrations(settings.database_url)
    typer.echo(f"schema up to date: {settings.database_url.split('@')[-1]}")


@app.command("fake-upstream")
def fake_upstream(
    host: str = "127.0.0.1",
    port: int = 8000,
    chunk_delay_ms: Annotated[float, typer.Option(help="Delay between stream chunks")] = 20.0,
) -> None:
    """Run the deterministic fake LLM (an OpenAI-compatible server for demos and tests)."""
    import uvicorn

    from gateway.fake_upstream import create_fake_app

    uvicorn.run(create_fake_app(chunk_delay_s=chunk_delay_ms / 1000), host=host, port=port)


if __name__ == "__main__":
    app()
