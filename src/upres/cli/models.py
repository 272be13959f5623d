"""`upres models`: what can be run, whether it is here; `info NAME` and `fetch NAME`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn

import typer
from rich import box
from rich.table import Table

from upres.cli.common import EXIT_SOME_FAILED, EXIT_USAGE, MODELS_DIR, out, print_error
from upres.errors import ModelLoadError, ModelNotFoundError
from upres.models.cache import sidecar_of
from upres.models.catalog import (
    CATALOG,
    DEFAULT_MODEL,
    ModelCard,
    find_card,
    get_card,
    names_of,
)
from upres.models.sources import UrlSource
from upres.models.state import READY, ModelState, card_state
from upres.models.user import models_folder, scan

# Short enough that the state column stays whole at 80 columns; the legend says what they mean.
STATE_PLAIN = {
    "cached": "cached",
    "installed": "offline",
    "user": "yours",
    "download": "download",
    "manual": "by hand",
    "missing": "missing",
    "broken": "broken",
}
STATE_COLOUR = {"cached": "green", "installed": "green", "user": "green"}
STATE_COLOUR |= {"missing": "red", "broken": "red"}
STATE_TEXT = {
    state: f"[{STATE_COLOUR.get(state, 'yellow')}]{text}[/]" for state, text in STATE_PLAIN.items()
}


def legend() -> str:
    return (
        "cached: ready; offline: made from an installed package on first use, no network;"
        " yours: a file of your models folder; download: fetched on first use; by hand: save"
        " the file where `upres models info NAME` says; broken: a file of your models folder"
        " that cannot be used (the reason follows). --available lists only the first three."
        " Any .pth/.pt/.ckpt/.safetensors file that spandrel recognises, or an ncnn .param"
        f" with its .bin, also works: -m PATH, or put it in {models_folder()}"
    )


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
        "also_known_as": [],
    }


def card_row(card: ModelCard) -> dict:
    state = card_state(card)
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
        "also_known_as": list(names_of(card)[1:]),
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


# Columns after state and name, in the order they are dropped from the right when the
# terminal is too narrow for them (at 80 columns: state, name, task, scale and params).
OPTIONAL_COLUMNS = ("task", "scale", "params", "license", "what")
MIN_WHAT = 24  # narrowest useful summary column; below it the summary is left out


def list_table(rows: list[dict], width: int) -> Table:
    """State first and names whole at any width; columns that do not fit are left out
    (`models info NAME` and `--json` have everything), and the summary wraps."""
    cells = [row_cells(row) for row in rows]
    headers = ("state", "name", *OPTIONAL_COLUMNS)
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(headers)]
    widths[0] = max(len(text) for text in STATE_PLAIN.values())
    widths[-1] = MIN_WHAT
    used, shown = 0, 0
    for column_width in widths:
        if used + column_width + 2 > width:
            break
        used, shown = used + column_width + 2, shown + 1
    shown = max(shown, 2)  # the state and the whole name, even on a tiny terminal
    table = Table(title="upres models", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("state", no_wrap=True)
    table.add_column("name", no_wrap=True, min_width=widths[1])
    for header in headers[2:shown]:
        table.add_column(
            header,
            no_wrap=header != "what",
            overflow="fold",
            justify="right" if header == "params" else "left",
        )
    for row, cell in zip(rows, cells, strict=True):
        table.add_row(STATE_TEXT[row["state"]], *cell[1:shown])
    return table


def row_cells(row: dict) -> tuple[str, ...]:
    params = f"{row['params'] / 1e6:.1f}M" if row["params"] else ""
    return (
        STATE_PLAIN[row["state"]],
        display_name(row),
        row["task"],
        f"x{row['scale']}" if row["scale"] else "",
        params,
        row["license"],
        row["summary"] + (f": {row['reason']}" if row["state"] == "broken" else ""),
    )


def display_name(row: dict) -> str:
    return row["name"] + (" (default)" if row["default"] else "")


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
        available: bool = typer.Option(
            False, "--available", help="Only the models that run here now, without a network."
        ),
    ) -> None:
        """List the built-in models, your models folder's, and whether each can run here."""
        if ctx.invoked_subcommand is not None:
            return
        from upres.models.state import of_user

        rows = [card_row(card) for card in CATALOG.values()]
        rows += [user_row(of_user(model)) for model in scan()]
        if available:
            rows = [row for row in rows if row["available"]]
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        out.print(list_table(rows, out.width))
        for row in rows:  # the reason may be in a column the terminal had no room for
            if row["state"] == "broken":
                out.print(
                    f"{row['name']}: {row['reason']}",
                    highlight=False,
                    markup=False,
                    soft_wrap=False,
                )
        out.print(legend(), highlight=False, markup=False, soft_wrap=False)

    @models_app.command("info")
    def info(
        name: str = typer.Argument(..., help="A model name (see `upres models`)."),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
    ) -> None:
        """Paper, training data, expected input, memory, source URL, cache path and sha256."""
        from upres.models.state import of_user
        from upres.models.user import find

        user = find(name) if find_card(name) is None else None
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
