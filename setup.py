"""Build hook: the wheel ships ``device_profiles/*.yaml`` as ``edge_runtime/device_profiles/`` (package data).

The profiles stay where users read and edit them, in the top-level ``device_profiles/`` folder; a source
checkout (and an editable install) reads them there, an installed wheel reads the copy this hook puts next to
the package (:data:`edge_runtime.profiles.BUILTIN_DIR` picks whichever exists). Everything else about the
build is declared in ``setup.cfg``.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

#: (folder in the source tree, folder inside the built package tree, files) the wheel carries as package data
DATA_DIRS = (("device_profiles", "edge_runtime/device_profiles", "*.yaml"),)


class BuildPyWithData(build_py):
    """``build_py`` that also copies :data:`DATA_DIRS` into the build tree (skipped for editable installs)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the source folders directly
        for src, dest, pattern in DATA_DIRS:
            files = sorted(Path(src).glob(pattern))
            if not files:
                raise SystemExit(f"setup.py: no {pattern} files in {src}/ to package")
            target = Path(self.build_lib) / dest
            self.mkpath(str(target))
            for f in files:
                self.copy_file(str(f), str(target / f.name))


setup(cmdclass={"build_py": BuildPyWithData})
