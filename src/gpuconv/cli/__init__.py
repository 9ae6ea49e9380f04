"""Command line: click commands over the Python API; ``main`` is the console entry point.

``app.py`` holds the click group and the convert/inspect/synth commands; every other command lives
in its own module with a ``register(app)``; ``errors.py`` is the one error printer.
"""


def main() -> None:
    import sys
    from gpuconv.conversion.malloc_tuning import reuse_freed_memory, skip_numba_blas_probe
    reuse_freed_memory()  # before any thread starts: one malloc arena (see malloc_tuning.py)
    skip_numba_blas_probe()  # a first Numba call without importing scipy.linalg
    from gpuconv.cli.app import main as _main
    if sys.argv[1:2] != ["convert"]:
        return _main()
    from gpuconv.cli.fast_exit import exit_now
    try:
        _main()
    except SystemExit as exc:
        exit_now(exc.code)
    exit_now(0)


def __getattr__(name):
    if name == "app":
        from gpuconv.cli.app import app
        return app
    raise AttributeError(name)


__all__ = ["main"]
