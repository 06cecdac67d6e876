"""`regmix validate`, `regmix export`, `regmix show`: the mixture file's own commands. `regmix export` is a thin
adapter over the export formats (`regmix_plugin.export`); its ``--format`` choices are their registry's."""

from __future__ import annotations

import argparse
import sys

from regmix_plugin.export.registry import available as export_formats
from regmix_plugin.export.registry import export, schedule_formats, write_export
from regmix_plugin.mixture import Mixture, MixtureError, format_table


def register(sub) -> None:
    p = sub.add_parser("validate", help="check a regmix.json mixture file, or a run directory",
                       description="A mixture file, or a run's record of its weights (prefixes left out), or a run "
                                   "directory: the minimal one that `regmix collect` and `regmix scale` read.")
    p.add_argument("file", help="mixture file, run directory, or schedule YAML")
    p.add_argument("--check-files", action="store_true", help="also check that every prefix's .bin/.idx exist")
    p.set_defaults(func=_validate)

    p = sub.add_parser("export", help="print stock Megatron-LM flags or files for a mixture (or CLIMB's nK.sh, "
                                      "or a schedule's)")
    p.add_argument("file", nargs="+", help="regmix.json mixture file(s); several need --out-dir; or one schedule YAML "
                                           "(formats schedule, megatron-phases, bridge-phases)")
    p.add_argument("--format", required=True, choices=export_formats() + schedule_formats())
    p.add_argument("--out", help="write to this file (atomically) instead of stdout")
    p.add_argument("--base-dir", help="resolve relative prefixes against this folder instead of the mixture file's (for "
                                      "CLIMB: its domains folder, so a mixture optimised without --base-mixture, whose "
                                      "prefixes are the domain names, names CLIMB's .bin/.idx prefixes)")
    p.add_argument("--out-dir", help="write one file per mixture into this folder, named after it (n3.json -> n3.sh "
                                     "for --format climb, n3.txt otherwise)")
    p.add_argument("--train-iters", type=int, help="schedules: the run's iterations (resolves phase fractions)")
    p.add_argument("--global-batch-size", type=int, help="schedules: the run's global batch size (megatron-phases)")
    p.set_defaults(func=_export)

    p = sub.add_parser("show", help="print a table of a mixture's weights")
    p.add_argument("file")
    p.set_defaults(func=_show)


def _validate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from regmix_plugin.mixture import is_weights_record, load_weights_record, read_mixture_json

    if Path(args.file).is_dir():
        from regmix_plugin.collect.rundir import check_run_dir

        print(check_run_dir(args.file))
        return 0
    if str(args.file).endswith((".yaml", ".yml")):  # a multi-phase schedule
        from regmix_plugin.schedule import Schedule

        sched = Schedule.load(args.file)
        mixes = [p.load() for p in sched.phases]
        names = sched.domain_order(mixes)
        at = [f"{p.fraction:g}" for p in sched.phases] if sched.fractional else [str(p.start) for p in sched.phases]
        print(f"{args.file}: ok, a schedule of {len(mixes)} phases over {len(names)} domains, beginning at "
              f"{'fractions' if sched.fractional else 'iterations'} {', '.join(at)}")
        return 0
    if is_weights_record(read_mixture_json(args.file)):
        weights = load_weights_record(args.file)
        print(f"{args.file}: ok as a run's mixture record, {len(weights)} domains (names and weights; add "
              "prefixes to every domain to train on it or export it)")
        return 0
    mix = Mixture.load(args.file, check_files=args.check_files)
    extra = ""
    if mix.normalization.get("normalized"):
        extra = f" (weights summed to {mix.normalization['raw_sum']:.6g}; normalised to 1)"
    zero = [d.name for d in mix.domains if d.weight == 0]
    if zero:
        extra += f"; weight 0 (evaluated, not trained on): {', '.join(zero)}"
    print(f"{args.file}: ok, {len(mix.domains)} domains{extra}")
    return 0


def _export_schedule(args: argparse.Namespace) -> int:
    from regmix_plugin.errors import ConfigError
    from regmix_plugin.export.registry import SCHEDULE_FORMATS
    from regmix_plugin.export.schedules import ScheduleOptions
    from regmix_plugin.io import atomic_write_text
    from regmix_plugin.schedule import Schedule

    if args.format not in schedule_formats():
        raise ConfigError(f"--format {args.format}: {args.file} is a schedule; use one of {', '.join(schedule_formats())} "
                          "(or export one phase's regmix.json)")
    for flag, v in (("--train-iters", args.train_iters), ("--global-batch-size", args.global_batch_size)):
        if v is not None and v < 1:
            raise ConfigError(f"{flag}: {v} must be a positive integer")
    text = SCHEDULE_FORMATS.get(args.format)(Schedule.load(args.file),
                                             ScheduleOptions(args.train_iters, args.global_batch_size, args.base_dir))
    if args.out:
        atomic_write_text(args.out, text)
    else:
        sys.stdout.write(text)
    return 0


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    if any(str(f).endswith((".yaml", ".yml")) for f in args.file):
        if len(args.file) > 1 or args.out_dir:
            raise MixtureError("file: a schedule YAML is exported alone; give one schedule and --out (or none)")
        args.file = args.file[0]
        return _export_schedule(args)
    if args.format in schedule_formats():
        raise MixtureError(f"--format {args.format}: a schedule format; give a schedule YAML, not {args.file[0]}")
    if args.out and args.out_dir:
        raise MixtureError("--out-dir: give --out (one mixture) or --out-dir (one file per mixture), not both")
    if args.out_dir:
        mixes = [(Path(f), Mixture.load(f)) for f in args.file]  # every file checked before anything is written
        suffix = ".sh" if args.format == "climb" else ".txt"
        texts = [(Path(args.out_dir) / (f.stem + suffix), export(m, args.format, args.base_dir))
                 for f, m in mixes]
        from regmix_plugin.io import atomic_write_text

        for path, text in texts:
            atomic_write_text(path, text)
        print(f"wrote {len(texts)} {args.format} file(s) to {args.out_dir}")
        return 0
    if len(args.file) > 1:
        raise MixtureError(f"file: {len(args.file)} mixtures given; pass --out-dir DIR to write one file per mixture")
    args.file = args.file[0]
    mix = Mixture.load(args.file)
    if args.out:
        try:
            write_export(mix, args.format, args.out, args.base_dir)
        except OSError as e:
            raise MixtureError(f"--out: cannot write {args.out} ({e.strerror or e}); give a writable file path") from None
    else:
        text = export(mix, args.format, args.base_dir)
        # Printed, every format ends its line (megatron-args is one line with no newline in a file).
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def _show(args: argparse.Namespace) -> int:
    print(format_table(Mixture.load(args.file)))
    return 0
