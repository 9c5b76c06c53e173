"""Builds the optional Cython extensions in src/ccproxy/_native/.

Every extension has a pure-Python twin, so a failed build (no compiler, no Cython) or
CCPROXY_BUILD_CYTHON=0 still yields a working install that uses the fallbacks.
"""

import os
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

NATIVE = Path("src/ccproxy/_native")


def _wanted() -> bool:
    return os.environ.get("CCPROXY_BUILD_CYTHON", "1").strip().lower() not in {"0", "false", "no"}


def _extensions() -> list:
    sources = sorted(NATIVE.glob("*.pyx"))
    if not sources or not _wanted():
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("ccproxy: Cython not available; using the pure-Python fallbacks")
        return []
    from setuptools import Extension

    exts = [
        Extension(f"ccproxy._native.{p.stem}", [str(p)], extra_compile_args=["-O3"])
        for p in sources
    ]
    return cythonize(exts, language_level=3, quiet=True)


class OptionalBuildExt(build_ext):
    """A failing extension build must not fail the install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any compiler failure means "use fallbacks"
            print(f"ccproxy: native build skipped ({exc}); using the pure-Python fallbacks")

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            print(f"ccproxy: could not build {ext.name} ({exc}); using its fallback")


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
