"""The ``ccproxy`` command: validate settings, say what will be served, start Granian."""

from __future__ import annotations

import sys

from . import __version__
from .config import ConfigError, Settings, help_text


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "-h" in args or "--help" in args:
        print(help_text())
        return 0
    if "--version" in args:
        from . import _native

        print(f"ccproxy {__version__} (native: {_native.IMPLEMENTATION})")
        return 0
    unknown = [a for a in args if a != "--check"]
    if unknown:
        print(
            f"ccproxy: unknown argument {unknown[0]!r} (settings come from the environment; see --help)",
            file=sys.stderr,
        )
        return 2
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"ccproxy: {exc}", file=sys.stderr)
        return 2
    from . import _native

    print(
        f"ccproxy {__version__}: http://{settings.host}:{settings.port} → {settings.describe()}; "
        f"workers={settings.workers}, native={_native.IMPLEMENTATION}, data={settings.data_dir}",
        flush=True,
    )
    if "--check" in args:
        return 0
    return serve(settings)


def serve(settings: Settings) -> int:
    from granian import Granian
    from granian.constants import Interfaces

    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"ccproxy: cannot create CCPROXY_DATA_DIR {settings.data_dir}: {exc}", file=sys.stderr)
        return 2
    server = Granian(
        "ccproxy.app:create_app_from_env",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.RSGI if settings.interface == "rsgi" else Interfaces.ASGI,
        workers=settings.workers,
        log_level=settings.log_level.lower(),  # type: ignore[arg-type]
    )
    server.serve()
    return 0
