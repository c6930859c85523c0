"""Packaging: the metadata is in setup.cfg. This file adds one step to the wheel build:
the Alembic migrations (``migrations/``) and the shipped data (``seeds/``, ``benchmark/``,
``configs/``), which live at the top of the source tree, are copied into the package
(``agentflow/_migrations``, ``agentflow/_data``) so that an installed AgentFlow finds them
wherever it runs (see ``agentflow.config.data_path`` and ``agentflow.db.engine.migrations_dir``)."""
from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SHIPPED = {"migrations": "agentflow/_migrations", "seeds": "agentflow/_data/seeds",
           "benchmark": "agentflow/_data/benchmark", "configs": "agentflow/_data/configs"}
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".*")


class BuildWithData(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads them from the checkout
            return
        for source, target in SHIPPED.items():
            src = HERE / source
            if not src.is_dir():
                raise SystemExit(f"{src} is missing: build from a source checkout or an sdist")
            dest = Path(self.build_lib) / target
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(src, dest, ignore=_IGNORE)
        # The `alembic` command line for an installed AgentFlow: alembic -c <site-packages>/agentflow/alembic.ini
        ini = (HERE / "alembic.ini").read_text(encoding="utf-8")
        ini = ini.replace("script_location = migrations", "script_location = %(here)s/_migrations")
        (Path(self.build_lib) / "agentflow" / "alembic.ini").write_text(ini, encoding="utf-8")


setup(cmdclass={"build_py": BuildWithData})
