"""`upres models`: what can be run, and whether it is on this machine."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from upres.cli.common import out
from upres.models.catalog import CATALOG, DEFAULT_MODEL, ModelCard


def availability(card: ModelCard) -> str:
    """'cached' (ready in the cache), 'installed' (obtainable offline) or 'missing'."""
    if card.source.is_local(card):
        return "cached"
    return "installed" if card.source.can_fetch(card) else "missing"


def card_row(card: ModelCard) -> dict:
    state = availability(card)
    return {
        "name": card.name,
        "default": card.name == DEFAULT_MODEL,
        "arch": card.arch,
        "task": card.task,
        "scale": card.scale,
        "license": card.license,
        "source": card.source.describe(),
        "available": state != "missing",
        "state": state,
        "summary": card.summary,
    }


def register(app: typer.Typer) -> None:
    @app.command("models")
    def models(
        as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
    ) -> None:
        """List the built-in models and whether they can run offline here."""
        rows = [card_row(card) for card in CATALOG.values()]
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        table = Table(title="upres models", title_justify="left")
        for column in ("name", "task", "scale", "arch", "license", "here"):
            table.add_column(column)
        for row in rows:
            name = row["name"] + (" (default)" if row["default"] else "")
            here = {
                "cached": "[green]ready[/]",
                "installed": "[green]ready[/] (converts on first use)",
                "missing": "[red]missing[/]",
            }[row["state"]]
            table.add_row(name, row["task"], f"x{row['scale']}", row["arch"], row["license"], here)
        out.print(table)
        out.print(
            "Any .pth/.pt/.ckpt/.safetensors file that spandrel recognises also works: -m PATH"
        )
