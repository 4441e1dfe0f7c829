"""The `edgekit` command line (typer + rich)."""
