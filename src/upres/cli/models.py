"""`upres models`: what can be run, whether it is here; `info NAME` and `fetch NAME`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn

import typer
from rich.table import Table

from upres.cli.common import EXIT_SOME_FAILED, EXIT_USAGE, MODELS_DIR, out, print_error
from upres.errors import ModelLoadError, ModelNotFoundError
from upres.models.cache import sidecar_of
from upres.models.catalog import CATALOG, DEFAULT_MODEL, ModelCard, get_card
from upres.models.sources import UrlSource
from upres.models.state import READY, ModelState, card_state
from upres.models.user import models_folder, scan

STATE_TEXT = {
    "cached": "[green]ready[/]",
    "installed": "[green]ready[/] (converts on first use)",
    "user": "[green]ready[/] (models folder)",
    "download": "[yellow]downloads[/] on first use",
    "manual": "[yellow]download by hand[/] (models info)",
    "missing": "[red]missing[/]",
    "broken": "[red]broken[/]",
}


def availability(card: ModelCard) -> str:
    """The card's state (models/state.py): cached, installed, download, manual or missing."""
    return card_state(card)


def user_row(model: ModelState) -> dict:
    """A model of the models folder, in the same shape as a built-in one."""
    assert model.user is not None
    return {
        "name": model.name,
        "default": False,
        "family": "",
        "arch": model.arch,
        "task": "user",
        "scale": model.scale,
        "params": None,
        "license": "",
        "source": str(model.user.path),
        "available": model.ready,
        "state": model.state,
        "reason": model.reason,
        "summary": model.summary,
    }


def card_row(card: ModelCard) -> dict:
    state = availability(card)
    return {
        "name": card.name,
        "default": card.name == DEFAULT_MODEL,
        "family": card.family,
        "arch": card.arch,
        "task": card.task,
        "scale": card.scale,
        "params": card.params,
        "license": card.license,
        "source": card.source.describe(),
        # Runs without a network now: cached, or convertible from an installed package.
        "available": state in READY,
        "state": state,
        "summary": card.summary,
    }


def card_details(card: ModelCard) -> dict:
    """Everything `models info` shows: the row plus provenance and the cache."""
    path = cache_path(card)
    recorded = None
    if path is not None and sidecar_of(path).is_file():
        recorded = sidecar_of(path).read_text().split()[0]
    source = card.source
    return card_row(card) | {
        "paper": card.paper,
        "training_data": card.training_data,
        "expected_input": card.expected_input,
        "input_channels": card.input_channels,
        "weights_key": card.weights_key,
        "memory_mb_per_mp": card.memory_mb_per_mp,
        "preferred_precision": card.preferred_precision,
        "url": getattr(source, "url", None),
        "page": getattr(source, "page", None) or None,
        "cache_path": str(path) if path is not None else None,
        "sha256": card.sha256 or recorded,
        "sha256_source": "catalogue" if card.sha256 else ("recorded" if recorded else None),
        "denoise_strength": card.default_denoise_strength,
        "blend_with": card.blend_with,
        "notes": card.notes,
    }


def cache_path(card: ModelCard) -> Path | None:
    target = getattr(card.source, "target", None)
    return target(card) if callable(target) else None


def list_table(rows: list[dict]) -> Table:
    table = Table(title="upres models", title_justify="left")
    table.add_column("name", no_wrap=True)
    for column in ("task", "scale"):
        table.add_column(column, no_wrap=True)
    # Long descriptions are cut to keep one line per model; `models info` has them whole.
    table.add_column("arch", no_wrap=True, overflow="ellipsis", max_width=32)
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("license", no_wrap=True)
    table.add_column("source", no_wrap=True, overflow="ellipsis", max_width=32)
    table.add_column("here")
    for row in rows:
        name = row["name"] + (" (default)" if row["default"] else "")
        params = f"{row['params'] / 1e6:.1f}M" if row["params"] else ""
        here = STATE_TEXT[row["state"]]
        if row["state"] == "broken":
            here += f": {row['reason']}"
        table.add_row(
            name,
            row["task"],
            f"x{row['scale']}" if row["scale"] else "",
            row["arch"],
            params,
            row["license"],
            row["source"],
            here,
        )
    return table


def info_table(details: dict) -> Table:
    table = Table(title=details["name"], title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in details.items():
        if value not in (None, "", False) or key in ("available",):
            table.add_row(key.replace("_", " "), str(value))
    return table


def fail(message: str, code: int) -> NoReturn:
    print_error(message)
    raise typer.Exit(code)


def known_card(name: str) -> ModelCard:
    try:
        return get_card(name)
    except ModelNotFoundError as error:
        fail(str(error), EXIT_USAGE)


def fetch_card(card: ModelCard, quiet: bool) -> Path:
    """Obtain the weights (a download shows a progress bar on stderr unless quiet)."""
    if isinstance(card.source, UrlSource):
        return card.source.fetch(card, progress=(lambda _done, _total: None) if quiet else None)
    return card.source.fetch(card)


def register(app: typer.Typer) -> None:
    models_app = typer.Typer(
        help="List the models; `info NAME` for details, `fetch NAME` to download ahead."
    )
    app.add_typer(models_app, name="models")

    @models_app.callback(invoke_without_command=True)
    def models(
        ctx: typer.Context,
        as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
        models_dir: str | None = MODELS_DIR,
    ) -> None:
        """List the built-in models, your models folder's, and whether each can run here."""
        if ctx.invoked_subcommand is not None:
            return
        from upres.models.state import of_user

        rows = [card_row(card) for card in CATALOG.values()]
        rows += [user_row(of_user(model)) for model in scan()]
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        out.print(list_table(rows))
        out.print(
            "Any .pth/.pt/.ckpt/.safetensors file that spandrel recognises, or an ncnn .param"
            f" with its .bin, also works: -m PATH, or put it in {models_folder()}",
            highlight=False,
        )

    @models_app.command("info")
    def info(
        name: str = typer.Argument(..., help="A model name (see `upres models`)."),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
    ) -> None:
        """Paper, training data, expected input, memory, source URL, cache path and sha256."""
        from upres.models.state import of_user
        from upres.models.user import find

        user = find(name) if name.lower() not in CATALOG else None
        details = user_row(of_user(user)) if user else card_details(known_card(name))
        if as_json:
            typer.echo(json.dumps(details, indent=2))
        else:
            out.print(info_table(details))

    @models_app.command("fetch")
    def fetch(
        name: str = typer.Argument(..., help="A model name (see `upres models`)."),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
    ) -> None:
        """Download (or convert) a model's weights into the cache now, and verify them."""
        card = known_card(name)
        cards = [card] + ([get_card(card.blend_with)] if card.blend_with else [])
        fetched = []
        for each in cards:
            try:
                path = fetch_card(each, quiet=as_json)
            except (ModelNotFoundError, ModelLoadError) as error:
                fail(str(error), EXIT_SOME_FAILED)
            sha256 = sidecar_of(path).read_text().split()[0] if sidecar_of(path).is_file() else None
            fetched.append({"name": each.name, "path": str(path), "sha256": sha256})
        if as_json:
            typer.echo(json.dumps(fetched[0] | {"also": fetched[1:]}, indent=2))
            return
        for row in fetched:
            out.print(f"[green]ready[/] {row['name']}: {row['path']}", highlight=False)
