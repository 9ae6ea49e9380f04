"""Command line: typer apps over the Python API; ``main`` is the console entry point.

``app.py`` holds the typer app and the convert/inspect/synth commands; every other command lives
in its own module with a ``register(app)``; ``errors.py`` is the one error printer.
"""


def main() -> None:
    from gpuconv.cli.app import main as _main
    _main()


def __getattr__(name):
    if name == "app":
        from gpuconv.cli.app import app
        return app
    raise AttributeError(name)


__all__ = ["main"]
