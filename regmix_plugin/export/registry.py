"""The export formats: name -> a function from a mixture to the text of its export, so that `regmix export
--format`, its error messages and the library see one list.

A format is one module: a function ``(mixture, base_dir) -> str`` decorated with ``@register("name")``. The
built-in ones are listed in ``BUILTIN_MODULES`` (so their names resolve without importing each); a format of
your own registers itself when its module is imported. The text is what `regmix export` writes to ``--out``
(atomically) or prints; a format refuses a mixture it cannot express with a one-line
:class:`~regmix_plugin.mixture.MixtureError` naming the format and the fix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from regmix_plugin.io import atomic_write_text
from regmix_plugin.mixture import Mixture
from regmix_plugin.plugins import Registry


class ExportFormat(Protocol):
    def __call__(self, mix: Mixture, base_dir: str | None = None) -> str:
        """The export's text. ``base_dir``: resolve relative prefixes against it instead of the mixture's folder."""


# Imported on first use, in this order (the order `regmix export --format` lists them in).
BUILTIN_MODULES = ("megatron_args", "data_args", "per_split_json", "bridge", "climb")

FORMATS: Registry[ExportFormat] = Registry("export format", "--format", "regmix_plugin.export", BUILTIN_MODULES)
register = FORMATS.register

# Formats of a multi-phase schedule (a schedule YAML): ``(schedule, options) -> str`` (export/schedules.py), where
# options carry the run's --train-iters and --global-batch-size. Same registry shape, its own names.
SCHEDULE_FORMATS: Registry = Registry("schedule export format", "--format", "regmix_plugin.export", ("schedules",))
register_schedule = SCHEDULE_FORMATS.register


def schedule_formats() -> list[str]:
    return SCHEDULE_FORMATS.names()


def available() -> list[str]:
    """The export formats: the built-in ones first, then any registered elsewhere."""
    return FORMATS.names()


def export(mix: Mixture, fmt: str, base_dir: str | None = None) -> str:
    """The text of ``mix`` in format ``fmt``; an unknown format is a one-line error listing the valid ones."""
    return FORMATS.get(fmt)(mix, base_dir)


def write_export(mix: Mixture, fmt: str, path: str | os.PathLike, base_dir: str | None = None) -> Path:
    """:func:`export` written atomically to ``path``."""
    return atomic_write_text(path, export(mix, fmt, base_dir))
