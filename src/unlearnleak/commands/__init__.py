"""CLI commands, one module each; ``cli.py`` mounts them on the typer app."""
