"""Command line: ``rawpairs build``, ``rawpairs inspect``, ``rawpairs calibrate`` and
``rawpairs materialize``."""

from __future__ import annotations

import functools
import json
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from rawpairs import messages
from rawpairs.build import BuildResult, build_splits
from rawpairs.build import build as run_build
from rawpairs.buildfolder import InspectError, is_build_folder, split_folders
from rawpairs.calibrate import CalibrationError
from rawpairs.calibrate import calibrate as run_calibrate
from rawpairs.choices import Engine
from rawpairs.classmap import parse_class_map
from rawpairs.config import BuildConfig
from rawpairs.errors import BuildError, BuildOutputError
from rawpairs.inspect import (
    format_summary,
    format_tar_summary,
    resolve_tars,
    summarize,
    summarize_tars,
)
from rawpairs.layout import CLASSES_FILE
from rawpairs.materialize import MaterializeError
from rawpairs.materialize import materialize as run_materialize
from rawpairs.options import click_options, from_flags
from rawpairs.preview import check_preview_path, write_preview
from rawpairs.priors import CapturePriors, profile_name
from rawpairs.verify import verify_shards

__all__ = ["main"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)


class ByteSize(click.ParamType):
    """``123``, ``64MB``, ``1.5GiB`` → bytes (K/M/G/T are powers of 1024)."""

    name = "size"

    def convert(self, value, param, ctx):  # type: ignore[no-untyped-def]
        if isinstance(value, int):
            return value
        m = _SIZE.match(str(value))
        if not m:
            self.fail(f"{value!r} is not a size like 256MB or 1073741824", param, ctx)
        number, unit = float(m.group(1)), m.group(2).upper()
        return int(number * 1024 ** " KMGT".index(unit or " "))


MESSAGE_LIMIT = 500  # characters of a one-line error on the terminal
CAMERA_JSON_LIMIT = 2**20  # bytes of a --camera file
one_line = functools.partial(messages.one_line, limit=MESSAGE_LIMIT)


def _read_camera(path: Path) -> str:
    """The text of a ``--camera`` file; ``ValueError`` when it is too large to be one."""
    size = path.stat().st_size
    if size > CAMERA_JSON_LIMIT:
        raise ValueError(f"{size} bytes; a capture-priors file is at most {CAMERA_JSON_LIMIT}")
    return path.read_text(encoding="utf-8")


def _read_priors(path: Path) -> CapturePriors:
    """The capture priors of a ``--camera`` file; a camera profile (one with a ``profile`` name,
    from ``rawpairs calibrate``) is recorded under this file's name (``profile:<file>``)."""
    priors = CapturePriors.from_json(_read_camera(path))
    if priors.profile is not None:
        priors = replace(priors, profile=profile_name(path.name))
    return priors


def _read_class_map(path: Path) -> dict[str, int]:
    """A ``--class-map``: a JSON file ``{name: id}`` (a build's ``classes.json``) or a build
    folder holding one."""
    if path.is_dir():
        if not (path / CLASSES_FILE).is_file():
            raise ValueError(f"a folder without {CLASSES_FILE} (not a labelled build)")
        path = path / CLASSES_FILE
    size = path.stat().st_size
    if size > CAMERA_JSON_LIMIT:
        raise ValueError(f"{size} bytes; a class map is at most {CAMERA_JSON_LIMIT}")
    return parse_class_map(json.loads(path.read_text(encoding="utf-8")), "the map")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rawpairs")
def main() -> None:
    """Build and inspect RAW–RGB pair datasets (WebDataset shards)."""


@main.command()
@click.option(
    "--src",
    required=True,
    help="Folder (or file) of camera RAW files and/or photos: a path or an fsspec URL.",
)
@click.option(
    "--out", required=True, help="Output folder for shards: a path or an fsspec URL (s3://…)."
)
@click_options(BuildConfig)  # one option per field: --seed, --crop, … --unprocess
@click.option(
    "--val-fraction",
    type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
    default=None,
    help="Split the sources by a hash of their path into OUT/train and OUT/val (this fraction), "
    "each a complete build [default: no split].",
)
@click.option(
    "--camera",
    "camera_json",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="JSON file fixing or narrowing the capture priors.",
)
@click.option(
    "--class-map",
    "class_map_file",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="With --labels folder: use these class ids (a classes.json {name: id}, or a build "
    "folder holding one) instead of numbering this build's folders.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes [default: all cores].",
)
@click.option(
    "--samples-per-shard",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="At most this many samples per shard (counting --crops per source).",
)
@click.option(
    "--shard-size",
    type=ByteSize(),
    default="256MiB",
    show_default=True,
    help="Aim for shards of about this many bytes (estimated from the input files).",
)
@click.option(
    "--sources-per-shard",
    type=click.IntRange(min=1),
    default=None,
    help="Exactly N consecutive sources per shard (overrides the two options above).",
)
@click.option(
    "--engine",
    type=click.Choice(Engine.values()),
    default=Engine.LOCAL.value,
    show_default=True,
    help="Run the per-source work here (spawned processes) or on a Ray cluster.",
)
@click.option(
    "--address",
    default=None,
    help="Ray cluster address (ray://host:10001 or auto); default: a local Ray instance.",
)
@click.option("--overwrite", is_flag=True, help="Replace a different build in --out.")
@click.option("--strict", is_flag=True, help="Exit non-zero if any input failed.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def build(
    src: str,
    out: str,
    val_fraction: float | None,
    camera_json: Path | None,
    class_map_file: Path | None,
    workers: int | None,
    samples_per_shard: int,
    shard_size: int,
    sources_per_shard: int | None,
    engine: str,
    address: str | None,
    overwrite: bool,
    strict: bool,
    quiet: bool,
    **flags: Any,
) -> None:
    """Turn RAW files and photos under --src into pair shards in --out."""
    config = _build_config(flags, camera_json)
    bars = _ProgressBars(quiet)
    options: dict[str, Any] = dict(
        workers=workers,
        samples_per_shard=samples_per_shard,
        shard_size=shard_size,
        sources_per_shard=sources_per_shard,
        overwrite=overwrite,
        engine=engine,
        address=address,
        progress=bars.progress,
        warn=bars.warn,
        class_map=_class_map(class_map_file) if class_map_file is not None else None,
    )
    try:
        if val_fraction is None:
            bars.new()
            results = {"": run_build(src, out, config, **options)}
        else:
            results = build_splits(src, out, config, val_fraction, on_split=bars.new, **options)
    except BuildError as err:
        raise click.UsageError(one_line(str(err))) from err
    except BuildOutputError as err:
        raise click.ClickException(one_line(str(err))) from err
    finally:
        bars.close()
    _report(results, out, strict)


def _build_config(flags: dict[str, Any], camera_json: Path | None) -> BuildConfig:
    """The :class:`BuildConfig` of ``rawpairs build``'s flags and its ``--camera`` file (a usage
    error naming the file or the options when either is refused)."""
    try:
        priors = _read_priors(camera_json) if camera_json else CapturePriors()
        return from_flags(BuildConfig, flags, priors=priors)
    except (ValueError, TypeError, RecursionError, OSError) as err:  # JSONDecodeError: ValueError
        cause = "JSON nested too deeply" if isinstance(err, RecursionError) else err
        raise click.UsageError(one_line(f"{camera_json or 'options'}: {cause}")) from err


def _class_map(path: Path) -> dict[str, int]:
    """``--class-map``'s ids (:func:`_read_class_map`), a usage error naming the file if refused."""
    try:
        return _read_class_map(path)
    except (ValueError, OSError, RecursionError) as err:
        cause = "JSON nested too deeply" if isinstance(err, RecursionError) else err
        raise click.UsageError(one_line(f"--class-map {path}: {cause}")) from err


class _ProgressBars:
    """One progress bar per build (two with --val-fraction) on stderr; none when ``quiet``."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bars: list[tqdm] = []

    def new(self, name: str = "") -> None:
        """Close the current bar and start one named ``name`` (a split)."""
        self.close()
        if not self.quiet:
            self.bars.append(
                tqdm(desc=name or None, unit="src", dynamic_ncols=True, file=sys.stderr)
            )

    def progress(self, done: int, total: int, written: int, errors: int) -> None:
        if self.bars:
            self.bars[-1].total, self.bars[-1].n = total, done
            self.bars[-1].set_postfix(samples=written, errors=errors)

    def warn(self, line: str) -> None:
        """A warning above the bar, never into its line."""
        (self.bars[-1].write if self.bars else click.echo)(f"warning: {line}", file=sys.stderr)

    def close(self) -> None:
        if self.bars:
            self.bars[-1].close()


def _report(results: dict[str, BuildResult], out: str, strict: bool) -> None:
    """Print each build's summary; exit 1 when a build wrote no sample, or with ``--strict``
    when any input failed."""
    for name, result in results.items():
        click.echo(f"{name}: {result.summary}" if name else result.summary)
    if any(result.samples == 0 for result in results.values()):
        raise click.exceptions.Exit(1)
    failed = sum(result.errors for result in results.values())
    if strict and failed:
        click.echo(f"--strict: {failed} inputs failed (see errors.jsonl in {out})", err=True)
        raise click.exceptions.Exit(1)


@main.command()
@click.argument("shards", nargs=-1, required=True)
@click.option(
    "--verify",
    is_flag=True,
    help="Read every sample and check it against the build's index and manifest; exit 1 on any "
    "problem (needs a rawpairs build folder).",
)
@click.option(
    "--preview",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a contact sheet PNG (one rawpairs build folder).",
)
@click.option("--preview-samples", type=click.IntRange(min=1), default=6, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect(
    shards: tuple[str, ...], verify: bool, preview: Path | None, preview_samples: int, as_json: bool
) -> None:
    """Summarise (and optionally verify or preview) SHARDS: a rawpairs build folder, the folder
    of a --val-fraction build (its train and val), several build folders, or any tar shards (a
    .tar, a folder of them, a glob, a brace range, a list), including other tools' shards."""
    if preview is not None:
        try:
            check_preview_path(preview)  # a name it cannot write: before anything is read
        except InspectError as err:
            raise click.UsageError(str(err)) from err
    folders = split_folders(shards[0]) if len(shards) == 1 else []
    folders = folders or [Path(s) for s in shards if is_build_folder(s)]
    if folders and len(folders) < len(shards) and not split_folders(shards[0]):
        raise click.UsageError("give rawpairs build folders or tar shards, not both")
    if folders:
        if preview is not None and len(folders) > 1:
            raise click.UsageError("--preview takes one build folder")
        results = [_inspect_build(f, verify, preview, preview_samples) for f in folders]
        summaries = [summary for summary, _ in results]
        if as_json:
            click.echo(json.dumps(summaries[0] if len(shards) == 1 and len(folders) == 1
                                  else summaries, indent=2, sort_keys=True))  # fmt: skip
        else:
            click.echo("\n\n".join(map(format_summary, summaries)))
        problems = [p for _, found in results for p in found]
        for p in problems if not as_json else []:
            click.echo(f"problem: {p}", err=True)
        if problems:
            raise click.exceptions.Exit(1)
        return
    try:
        tars = resolve_tars(list(shards))
        tar_summary = summarize_tars(tars)
    except InspectError as err:
        raise click.UsageError(str(err)) from err
    click.echo(
        json.dumps(tar_summary, indent=2, sort_keys=True)
        if as_json
        else format_tar_summary(tar_summary)
    )
    if verify or preview is not None:
        option = "--verify" if verify else "--preview"
        homes = {path.parent for path in tars}
        home = homes.pop() if len(homes) == 1 else None
        where = (
            f"these shards are in the build folder {home}: run `rawpairs inspect {home} {option}`"
            if home is not None and is_build_folder(home)
            else f"{' '.join(shards)} holds tar shards only, so the summary above is all that can "
            "be checked"
        )
        click.echo(
            f"{option} needs a rawpairs build folder (index.json, manifest.parquet, build.json): "
            f"{where}",
            err=True,
        )
        raise click.exceptions.Exit(2)
    if tar_summary["problems"]:
        raise click.exceptions.Exit(1)


def _inspect_build(
    folder: Path, verify: bool, preview: Path | None, preview_samples: int
) -> tuple[dict, list[str]]:
    """The summary of one build folder and its problems (``--verify``); a malformed build is a
    usage error without ``--verify`` and a problem with it."""
    try:
        summary = summarize(folder)
    except InspectError as err:
        if not verify:
            raise click.UsageError(str(err)) from err
        click.echo(f"problem: {err}", err=True)  # a malformed build fails verification
        raise click.exceptions.Exit(1) from err
    problems: list[str] = []
    if verify:
        problems = verify_shards(folder)
        summary["verify"] = {"ok": not problems, "problems": problems}
    if preview is not None:
        try:
            write_preview(folder, preview, n=preview_samples)
        except InspectError as err:
            raise click.ClickException(str(err)) from err
        summary["preview"] = str(preview)
    return summary, problems


@main.command()
@click.option(
    "--src",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder (or file) of one camera's RAW files (not recursive).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Camera profile to write (JSON, the form --camera takes).",
)
def calibrate(src: Path, out: Path) -> None:
    """Measure one camera from its RAW files and write a profile for `build --camera`."""
    try:
        profile, warnings = run_calibrate(src, out)
    except CalibrationError as err:
        raise click.UsageError(one_line(str(err))) from err
    except OSError as err:
        raise click.UsageError(one_line(f"{out}: cannot write ({err.strerror})")) from err
    for line in warnings:
        click.echo(f"warning: {one_line(line)}", err=True)
    report = profile.calibration or {}
    noise = ", ".join(f"{k} {v}" for k, v in sorted(report["noise"]["sources"].items()))
    click.echo(
        f"{out}: {len(profile.captures or ())} file(s), CFA {profile.cfa[0]}, black "
        f"{profile.black_level[0]:g}, white {profile.white_level:g}, matrix "
        f"{report['xyz_to_cam']}, noise from {noise}"
    )


@main.command()
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("out")
def materialize(src: Path, out: str) -> None:
    """Write the at-load build SRC (a local folder) as stored-RAW shards into the new folder OUT
    (path or URL):
    each at-load sample gets the RAW its recipe implies; other samples are copied."""
    try:
        made = run_materialize(src, out)
    except MaterializeError as err:
        raise click.UsageError(one_line(str(err))) from err
    click.echo(f"{made} samples made from their recipes → {out}")


if __name__ == "__main__":
    main()
