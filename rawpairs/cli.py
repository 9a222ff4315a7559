"""Command line: ``rawpairs build``, ``rawpairs inspect``, ``rawpairs calibrate`` and
``rawpairs materialize``."""

from __future__ import annotations

import functools
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from rawpairs import messages
from rawpairs.choices import (
    CropMode,
    Demosaic,
    Engine,
    Exposure,
    Gamma,
    NoisePlacement,
    Render,
    RGBFormat,
    Tone,
    Unprocess,
)
from rawpairs.headers import MAX_PIXELS

if TYPE_CHECKING:
    from rawpairs.priors import CapturePriors

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
    from dataclasses import replace

    from rawpairs.priors import CapturePriors, profile_name

    priors = CapturePriors.from_json(_read_camera(path))
    if priors.profile is not None:
        priors = replace(priors, profile=profile_name(path.name))
    return priors


def _read_class_map(path: Path) -> dict[str, int]:
    """A ``--class-map``: a JSON file ``{name: id}`` (a build's ``classes.json``) or a build
    folder holding one."""
    from rawpairs.classmap import parse_class_map
    from rawpairs.layout import CLASSES_FILE

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
@click.option(
    "--crop", type=int, default=None, help="Crop N×N pairs at even offsets (default: whole image)."
)
@click.option(
    "--crop-mode",
    type=click.Choice(CropMode.values()),
    default=CropMode.RANDOM.value,
    show_default=True,
)
@click.option("--crops", type=int, default=1, show_default=True, help="Random crops per source.")
@click.option(
    "--max-side",
    type=int,
    default=None,
    help="Resize photos (Bayer-bin RAW) so the longer side is at most N.",
)
@click.option(
    "--min-side",
    type=click.IntRange(min=1),
    default=None,
    help="Skip sources whose shorter side (as read) is below N pixels [default: no minimum; "
    "sources that cannot hold --crop are skipped unless --upscale].",
)
@click.option(
    "--upscale",
    is_flag=True,
    help="Resize photos smaller than --crop up to it (Lanczos) instead of skipping them.",
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
    default=None,
    help="Split the sources by a hash of their path into OUT/train and OUT/val (this fraction), "
    "each a complete build [default: no split].",
)
@click.option(
    "--render",
    type=click.Choice(Render.values()),
    default=Render.RAWPAIRS.value,
    show_default=True,
    help="How RAW files get their RGB.",
)
@click.option(
    "--demosaic",
    type=click.Choice(Demosaic.values()),
    default=Demosaic.MALVAR.value,
    show_default=True,
)
@click.option(
    "--tone",
    type=click.Choice(Tone.values()),
    default=Tone.DISPLAY_SMOOTHSTEP.value,
    show_default=True,
    help="Tone curve (both directions): smoothstep on display values, on linear values, or none.",
)
@click.option(
    "--gamma",
    type=click.Choice([g.value for g in Gamma if g is not Gamma.LINEAR]),
    default=Gamma.SRGB.value,
    show_default=True,
)
@click.option(
    "--exposure",
    type=click.Choice(Exposure.values()),
    default=Exposure.AUTO.value,
    show_default=True,
    help="RAW files: gain putting the 99th percentile at white (LibRaw's auto-bright), or none.",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=MAX_PIXELS,
    show_default=True,
    help="Refuse inputs whose declared size exceeds N pixels (checked before decoding).",
)
@click.option(
    "--rgb-format",
    type=click.Choice(RGBFormat.values()),
    default=RGBFormat.PNG.value,
    show_default=True,
)
@click.option(
    "--camera",
    "camera_json",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="JSON file fixing or narrowing the capture priors.",
)
@click.option(
    "--noise",
    type=click.Choice(NoisePlacement.values()),
    default=NoisePlacement.IN_RAW.value,
    show_default=True,
    help="Simulated RAW: bake shot/read noise into raw.npy, or store it clean with its noise "
    "parameters so the loader draws fresh noise every epoch.",
)
@click.option(
    "--unprocess",
    type=click.Choice(Unprocess.values()),
    default=Unprocess.IN_BUILD.value,
    show_default=True,
    help="Photos: simulate the RAW now and store it (raw.npy), or store the photo's RGB and the "
    "recipe so the loader makes the RAW (about the JPEG's bytes, several times faster to build).",
)
@click.option(
    "--labels",
    type=click.Choice(["folder"]),
    default=None,
    help="Add `cls` from the parent folder name.",
)
@click.option(
    "--class-map",
    "class_map_file",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="With --labels folder: use these class ids (a classes.json {name: id}, or a build "
    "folder holding one) instead of numbering this build's folders.",
)
@click.option("--seed", type=int, default=0, show_default=True)
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
    crop: int | None,
    crop_mode: str,
    crops: int,
    max_side: int | None,
    min_side: int | None,
    upscale: bool,
    val_fraction: float | None,
    render: str,
    demosaic: str,
    tone: str,
    gamma: str,
    exposure: str,
    max_pixels: int,
    rgb_format: str,
    camera_json: Path | None,
    noise: str,
    unprocess: str,
    labels: str | None,
    class_map_file: Path | None,
    seed: int,
    workers: int | None,
    samples_per_shard: int,
    shard_size: int,
    sources_per_shard: int | None,
    engine: str,
    address: str | None,
    overwrite: bool,
    strict: bool,
    quiet: bool,
) -> None:
    """Turn RAW files and photos under --src into pair shards in --out."""
    from tqdm import tqdm

    from rawpairs.build import build as run_build
    from rawpairs.build import build_splits
    from rawpairs.errors import BuildError, BuildOutputError
    from rawpairs.priors import CapturePriors
    from rawpairs.sample import BuildConfig

    try:
        priors = _read_priors(camera_json) if camera_json else None
        config = BuildConfig(
            seed=seed,
            crop=crop,
            crop_mode=crop_mode,
            crops=crops,
            max_side=max_side,
            render=render,
            demosaic=demosaic,
            tone=tone,
            gamma=gamma,
            exposure=exposure,
            max_pixels=max_pixels,
            rgb_format=rgb_format,
            priors=priors or CapturePriors(),
            noise=noise,
            labels=labels == "folder",
            min_side=min_side,
            upscale=upscale,
            unprocess=unprocess,
        )
    except (ValueError, TypeError, RecursionError, OSError) as err:  # JSONDecodeError: ValueError
        cause = "JSON nested too deeply" if isinstance(err, RecursionError) else err
        raise click.UsageError(one_line(f"{camera_json or 'options'}: {cause}")) from err

    class_map = None
    if class_map_file is not None:
        try:
            class_map = _read_class_map(class_map_file)
        except (ValueError, OSError, RecursionError) as err:
            cause = "JSON nested too deeply" if isinstance(err, RecursionError) else err
            raise click.UsageError(one_line(f"--class-map {class_map_file}: {cause}")) from err

    bars: list = []  # one progress bar per build (two with --val-fraction), none with --quiet

    def new_bar(name: str = "") -> None:
        if bars:
            bars[-1].close()
        if not quiet:
            bars.append(tqdm(desc=name or None, unit="src", dynamic_ncols=True, file=sys.stderr))

    def progress(done: int, total: int, written: int, errors: int) -> None:
        if bars:
            bars[-1].total, bars[-1].n = total, done
            bars[-1].set_postfix(samples=written, errors=errors)

    def warn(line: str) -> None:  # above the bar, never into its line
        (bars[-1].write if bars else click.echo)(f"warning: {line}", file=sys.stderr)

    options: dict = dict(
        workers=workers,
        samples_per_shard=samples_per_shard,
        shard_size=shard_size,
        sources_per_shard=sources_per_shard,
        overwrite=overwrite,
        engine=engine,
        address=address,
        progress=progress,
        warn=warn,
        class_map=class_map,
    )
    try:
        if val_fraction is None:
            new_bar()
            results = {"": run_build(src, out, config, **options)}
        else:
            results = build_splits(src, out, config, val_fraction, on_split=new_bar, **options)
    except BuildError as err:
        raise click.UsageError(one_line(str(err))) from err
    except BuildOutputError as err:
        raise click.ClickException(one_line(str(err))) from err
    finally:
        if bars:
            bars[-1].close()
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
    from rawpairs.buildfolder import InspectError, is_build_folder, split_folders
    from rawpairs.inspect import format_tar_summary, resolve_tars, summarize_tars
    from rawpairs.preview import check_preview_path

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
            click.echo("\n\n".join(map(_format_build, summaries)))
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


def _format_build(summary: dict) -> str:
    from rawpairs.inspect import format_summary

    return format_summary(summary)


def _inspect_build(
    folder: Path, verify: bool, preview: Path | None, preview_samples: int
) -> tuple[dict, list[str]]:
    """The summary of one build folder and its problems (``--verify``); a malformed build is a
    usage error without ``--verify`` and a problem with it."""
    from rawpairs.buildfolder import InspectError
    from rawpairs.inspect import summarize
    from rawpairs.preview import write_preview
    from rawpairs.verify import verify_shards

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
    from rawpairs.calibrate import CalibrationError
    from rawpairs.calibrate import calibrate as run_calibrate

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
    from rawpairs.materialize import MaterializeError
    from rawpairs.materialize import materialize as run_materialize

    try:
        made = run_materialize(src, out)
    except MaterializeError as err:
        raise click.UsageError(one_line(str(err))) from err
    click.echo(f"{made} samples made from their recipes → {out}")


if __name__ == "__main__":
    main()
