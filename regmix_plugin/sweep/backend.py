"""Sweep backends: where and how the runs of a study are started. A backend is one module.

A backend is a class with a ``run(prep, progress)`` method, decorated with ``@register("name")``; the
name is then a valid ``backend:`` of a study file (`sweep/study.py` validates against this registry), a
``regmix sweep --backend`` choice (`sweep/commands.py`), and what :func:`regmix_plugin.sweep.launch.sweep`
hands the prepared runs to. ``run`` receives a :class:`~regmix_plugin.sweep.launch.Prepared`: the study,
its ``sweep.json`` (``prep.spec_path``) and the run ids, whose run directories exist. For each run that is
not finished (``prep.states()``) it starts the supervisor, ``python -m regmix_plugin.sweep.runner SPEC
RUN_ID`` (or :func:`regmix_plugin.sweep.runner.run` in a process of its own), which takes the run's lock,
retries, and writes its ``status.json``: a backend never records outcomes itself, so ``regmix sweep``
summarises and resumes every backend alike. It returns once its runs are finished, or handed to a queue
that finishes them (Slurm with ``wait: false``).

The built-in backends are listed in ``BUILTIN_MODULES`` so that their names resolve without importing each;
a backend of your own registers itself when its module is imported (before the study is loaded). Settings
of a built-in backend are its section of the study file (``local:``, ``slurm:``), a config class in its
module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from regmix_plugin.plugins import Registry

if TYPE_CHECKING:
    from regmix_plugin.sweep.launch import Prepared


class Backend(Protocol):
    def run(self, prep: Prepared, progress: bool = True) -> None:
        """Run (or hand off) every unfinished run of ``prep``; ``progress``: show a progress bar."""


# Imported on first use, in this order (the order the names are listed in).
BUILTIN_MODULES = ("local", "slurm")

BACKENDS: Registry[type[Backend]] = Registry("sweep backend", "backend", "regmix_plugin.sweep", BUILTIN_MODULES)
register = BACKENDS.register


def available() -> list[str]:
    """The backend names: the built-in ones first, then any registered elsewhere."""
    return BACKENDS.names()


def get_backend(name: str, field: str = "backend") -> Backend:
    """A new backend ``name``; an unknown name is a one-line error listing the valid ones."""
    return BACKENDS.get(name, field)()
