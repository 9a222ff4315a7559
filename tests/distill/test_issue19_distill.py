"""Issue 19, distill side: no lost keys, no mixed runs, bounded memory, one-line errors, one
class map. Each test failed on the code before its fix (docs/guarantees.md lists them).

Tiny runs (32 px crops, batches of 2, the real teacher) on 2 CPU cores. Settings that the old
code would have tried to allocate run in a subprocess under an address-space limit, so a
regression is a failed test, not a machine out of memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from distill import data, export
from distill import evaluate as ev
from distill.checkpoint import read_checkpoint
from distill.records import iter_records
from distill.shardlist import check_class_maps, resolve_shards
from distill.train import main

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
TINY = ["--crop", "32", "--batch-size", "2", "--num-workers", "0", "--shuffle-buffer", "4"]
TINY += ["--warmup-steps", "1", "--log-every", "1", "--device", "cpu", "--no-progress"]


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def steps_of(path: Path) -> list[int]:
    return [int(line.split("\t")[0]) for line in path.read_text().splitlines()]


def wait_for_checkpoint(path: Path, step: int, proc: subprocess.Popen, timeout: float = 240) -> int:
    """Poll until ``path`` holds a checkpoint of at least ``step``; return its step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        if path.is_file():
            try:
                found = read_checkpoint(path)["step"]
            except (ValueError, FileNotFoundError):  # replaced while read
                found = -1
            if found >= step:
                return int(found)
        time.sleep(0.1)
    raise AssertionError(f"no checkpoint of step {step} within {timeout} s")


def limited(memory: int = 12 * 2**30):
    """``preexec_fn``: an address-space limit, so an attempt to allocate too much fails fast."""
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (memory, memory))


def run_module(module: str, args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=limited(),
    )


@pytest.fixture(scope="module")
def run(pair_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step run folder (last.pt at step 2)."""
    out = tmp_path_factory.mktemp("issue19_run")
    assert main(["--shards", str(pair_shards), "--out", str(out), "--steps", "2", *TINY]) == 0
    return out


# Item 9: --log-keys survives kill -9 and SIGTERM ----------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_keys_of_checkpointed_steps_survive_a_kill(
    pair_shards: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    args = ["--shards", str(pair_shards), "--steps", "400", "--checkpoint-every", "2"]
    args += ["--log-keys", *TINY]
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "distill.train", *args, "--out", str(out)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_checkpoint(out / "last.pt", 4, proc)
        proc.send_signal(sig)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == -sig
    saved = read_checkpoint(out / "last.pt")["step"]
    kept = [s for s in steps_of(out / "keys-rank0.txt") if s < saved]
    assert kept == [s for s in range(saved) for _ in range(2)], (saved, kept)  # batch 2
    # Resumed, the keys are those of an uninterrupted run, each step once.
    end = str(saved + 2)
    assert main([*args, "--out", str(out), "--resume", "auto", "--stop-after", end]) == 0
    assert main([*args, "--out", str(tmp_path / "whole"), "--stop-after", end]) == 0
    keys = (out / "keys-rank0.txt").read_text()
    assert keys == (tmp_path / "whole" / "keys-rank0.txt").read_text()
    assert steps_of(out / "keys-rank0.txt") == [s for s in range(saved + 2) for _ in range(2)]


# Item 10: a used --out is never silently mixed ------------------------------------------------


def test_a_used_out_is_refused_without_resume_and_overwrite_keeps_other_files(
    pair_shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    args = ["--shards", str(pair_shards), "--out", str(out), "--log-keys", *TINY]
    assert main([*args, "--steps", "3"]) == 0
    (out / "notes.txt").write_text("mine")
    (out / "eval").mkdir()
    (out / "eval" / "metrics.json").write_text("{}")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()

    assert main([*args, "--steps", "2"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "--resume auto" in line and "--overwrite" in line and str(out) in line
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before

    assert main([*args, "--steps", "2", "--overwrite", "--resume", "auto"]) == 2
    assert "pick one" in one_line(capsys.readouterr().err)

    assert main([*args, "--steps", "2", "--overwrite"]) == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert [int(r.split(",")[0]) for r in (out / "log.csv").read_text().splitlines()[1:]] == [1, 2]
    assert steps_of(out / "keys-rank0.txt") == [0, 0, 1, 1]
    assert read_checkpoint(out / "last.pt")["step"] == 2
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "eval" / "metrics.json").read_text() == "{}"


def test_resume_auto_without_a_checkpoint_starts_clean(pair_shards: Path, tmp_path: Path) -> None:
    """A run killed before its first checkpoint left only logs: `--resume auto` starts again
    from step 0 without appending to them."""
    out = tmp_path / "run"
    args = ["--shards", str(pair_shards), "--out", str(out), "--log-keys", *TINY]
    assert main([*args, "--steps", "3"]) == 0
    (out / "last.pt").unlink()
    assert main([*args, "--steps", "2", "--resume", "auto"]) == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert steps_of(out / "keys-rank0.txt") == [0, 0, 1, 1]


# Item 11: memory ------------------------------------------------------------------------------


def test_the_loaders_shuffle_buffer_is_bounded_in_bytes_and_resumes_exactly(
    pair_shards: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [
        r for shard in resolve_shards(str(pair_shards)) for r in iter_records(shard, 0, 0)
    ]
    sizes = sorted(r.nbytes for r in records)
    assert sizes[0] > 0 and all(r.nbytes >= sum(map(len, r.members.values())) for r in records)
    budget = 3 * sizes[len(sizes) // 2]  # about three records, far fewer than 16
    kwargs = dict(batch_size=3, crop=32, teacher_size=32, seed=4, shuffle_buffer=16)
    held: list[int] = []
    shuffle = data.buffer_shuffle

    def watched(items, size, rng, *, max_bytes, nbytes):
        pulled: list = []

        def source():
            for item in items:
                held.append(sum(map(nbytes, pulled)))
                pulled.append(item)
                yield item

        for out in shuffle(source(), size, rng, max_bytes=max_bytes, nbytes=nbytes):
            pulled.remove(out)
            yield out

    monkeypatch.setattr(data, "buffer_shuffle", watched)
    bounded = take(data.make_loader(str(pair_shards), shuffle_bytes=budget, **kwargs), 12)
    assert held and max(held) <= budget
    unbounded = take(data.make_loader(str(pair_shards), **kwargs), 12)
    assert [b["key"] for b in bounded] != [b["key"] for b in unbounded]  # the budget binds
    decoded = []
    decode = data.decode_pair
    monkeypatch.setattr(data, "decode_pair", lambda m, s, k: decoded.append(k) or decode(m, s, k))
    for k in (1, 5, 9):
        decoded.clear()
        resumed = take(
            data.make_loader(str(pair_shards), shuffle_bytes=budget, start_batch=k, **kwargs),
            12 - k,
        )
        assert [b["key"] for b in resumed] == [b["key"] for b in bounded[k:]]
        for got, want in zip(resumed, bounded[k:], strict=True):
            assert torch.equal(got["raw"], want["raw"]) and torch.equal(got["rgb"], want["rgb"])
        assert len(decoded) == 3 * (12 - k)  # the replayed batches are not decoded


def take(loader, n: int) -> list[dict]:
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            break
    return out


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--teacher-size", "20000", "--batch-size", "32"], "--teacher-size 20000 needs"),
        (["--crop", "100000", "--batch-size", "32"], "--crop 100000"),
        (["--shuffle-memory", str(2**30)], "lower --shuffle-memory"),
    ],
    ids=["teacher-size", "crop", "shuffle-memory"],
)
def test_settings_that_cannot_fit_are_refused_before_anything_is_loaded(
    pair_shards: Path, tmp_path: Path, flags: list[str], expected: str
) -> None:
    args = ["--shards", str(pair_shards), "--out", str(tmp_path / "run"), "--steps", "2"]
    args += ["--device", "cpu", "--num-workers", "0", "--no-progress", *flags]
    result = run_module("distill.train", args)
    assert result.returncode == 2, result.stderr[-2000:]
    line = one_line(result.stderr)
    assert expected in line and "available" in line, line
    assert not (tmp_path / "run" / "log.jsonl").exists()


def test_a_huge_shuffle_buffer_is_bounded_by_its_memory(pair_shards: Path, tmp_path: Path) -> None:
    """`--shuffle-buffer 1000000000` over a repeated 24-sample set used to fill memory until the
    OOM killer came; now at most --shuffle-memory of records are held."""
    args = ["--shards", str(pair_shards), "--out", str(tmp_path / "run"), "--steps", "2"]
    args += [*TINY, "--shuffle-buffer", "1000000000", "--shuffle-memory", "4"]
    result = run_module("distill.train", args, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text(encoding="utf-8"))
    assert summary["steps"] == 2


# Item 12: clear errors instead of tracebacks ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [("x.txt", "cannot write .txt"), ("sheet", "no extension"), ("file/p.png", "is a file")],
)
def test_a_preview_name_it_cannot_write_is_one_line_exit_2(
    run: Path, tmp_path: Path, name: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rawpairs.inspect as inspect
    from rawpairs.cli import main as cli

    (tmp_path / "file").write_text("a file, not a folder")
    monkeypatch.setattr(inspect, "summarize", lambda *a: pytest.fail("read before the check"))
    result = CliRunner().invoke(cli, ["inspect", str(run), "--preview", str(tmp_path / name)])
    assert result.exit_code == 2, (result.output, result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and expected in errors[0], result.output


def test_out_naming_a_file_is_one_line_before_any_work(
    run: Path,
    pair_shards: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import distill.trainer as trainer

    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    never = lambda *a, **k: pytest.fail("work started before --out was checked")  # noqa: E731
    monkeypatch.setattr(trainer, "build_models", never)
    monkeypatch.setattr(ev, "load_checkpoint", never)
    monkeypatch.setattr(export, "load_checkpoint", never)
    checkpoint = str(run / "last.pt")
    for out in (a_file, a_file / "below"):
        calls = [
            lambda o: main(["--shards", str(pair_shards), "--out", str(o), *TINY]),
            lambda o: ev.main(
                ["--shards", str(pair_shards), "--checkpoint", checkpoint, "--out", str(o)]
            ),
            lambda o: export.main(["--checkpoint", checkpoint, "--out", str(o)]),
        ]
        for call in calls:
            assert call(out) == 2
            line = one_line(capsys.readouterr().err)
            assert "--out" in line and str(out) in line and "not a folder" in line
    assert a_file.read_text() == "mine"


@pytest.mark.parametrize(
    ("device", "expected"),
    [("banana", "not a device name"), ("cuda", "CUDA is not available"), ("cuda:7", "CUDA")],
)
def test_evaluate_device_errors_are_one_line(
    run: Path, pair_shards: Path, tmp_path: Path, device: str, expected: str,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    args = ["--shards", str(pair_shards), "--checkpoint", str(run / "last.pt")]
    assert ev.main([*args, "--out", str(tmp_path / "e"), "--device", device]) == 2
    assert expected in one_line(capsys.readouterr().err)
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize(
    ("crop", "expected"),
    [
        ("-2", "--crop must be an even number of pixels >= 2, got -2"),
        ("0", "leave --crop out to use the training crop"),
        ("7", "--crop must be an even number"),
    ],
)
def test_evaluate_crop_errors_name_crop(
    run: Path, pair_shards: Path, tmp_path: Path, crop: str, expected: str,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    args = ["--shards", str(pair_shards), "--checkpoint", str(run / "last.pt")]
    assert ev.main([*args, "--out", str(tmp_path / "e"), "--crop", crop]) == 2
    line = one_line(capsys.readouterr().err)
    assert expected in line and "teacher_size" not in line


def test_evaluate_a_crop_that_cannot_fit_is_one_line(
    run: Path, pair_shards: Path, tmp_path: Path
) -> None:
    args = ["--shards", str(pair_shards), "--checkpoint", str(run / "last.pt")]
    result = run_module(
        "distill.evaluate", [*args, "--out", str(tmp_path / "e"), "--crop", "100000"]
    )
    assert result.returncode == 2, result.stderr[-2000:]
    line = one_line(result.stderr)
    assert "--crop 100000" in line and "available" in line


@pytest.mark.parametrize(
    ("crop", "expected"),
    [
        ("-2", "--crop must be an even number of pixels >= 2, got -2"),
        ("1", "--crop must be an even number of pixels >= 2, got 1"),
        ("3", "--crop must be an even number of pixels >= 2, got 3"),
        ("0", "--crop must be an even number of pixels >= 2, got 0"),
        (
            "4",
            "smaller than the student's stride: its last feature map would be padding; "
            "use --crop >= 32",
        ),
    ],
)
def test_export_crop_errors_are_one_line(
    run: Path, tmp_path: Path, crop: str, expected: str, capsys: pytest.CaptureFixture
) -> None:
    args = ["--checkpoint", str(run / "last.pt"), "--out", str(tmp_path / "x"), "--crop", crop]
    assert export.main(args) == 2
    assert expected in one_line(capsys.readouterr().err)
    assert not (tmp_path / "x").exists()


def test_the_smallest_crop_is_the_students_stride(run: Path) -> None:
    from distill.checkpoint import load_checkpoint

    student, _, _ = load_checkpoint(run / "last.pt")
    assert export.smallest_crop(student) == 32  # EfficientNet-Lite0: five stride-2 stages
    assert (
        export.main(
            ["--checkpoint", str(run / "last.pt"), "--out", str(run / "x32"), "--crop", "32"]
        )
        == 0
    )


def test_ctrl_c_during_training_is_one_line_exit_130_and_last_pt_stays_whole(
    pair_shards: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = ["--shards", str(pair_shards), "--steps", "400", "--checkpoint-every", "2", *TINY]
    args = [*args, "--num-workers", "1"]  # the loader worker gets the Ctrl-C too
    proc = subprocess.Popen(
        [sys.executable, "-m", "distill.train", *args, "--out", str(out)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        wait_for_checkpoint(out / "last.pt", 2, proc)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends
        _, err = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-3000:]
    line = one_line(err)
    saved = read_checkpoint(out / "last.pt")["step"]
    assert (
        "interrupted at step" in line and f"keeps step {saved}" in line and "--resume auto" in line
    )
    assert not list(out.glob(".*tmp*"))
    end = str(saved + 1)
    assert main([*args, "--out", str(out), "--resume", "auto", "--stop-after", end]) == 0
    assert read_checkpoint(out / "last.pt")["step"] == saved + 1


# Item 6: training and evaluation mix shards of one class map -----------------------------------


def _labelled_copy(pair_shards: Path, folder: Path, classes: dict[str, int]) -> Path:
    folder.mkdir(parents=True)
    for shard in sorted(pair_shards.glob("*.tar")):
        shutil.copy(shard, folder / shard.name)
    (folder / "classes.json").write_text(json.dumps(classes))
    return folder


def test_training_and_evaluation_refuse_shards_of_different_class_maps(
    pair_shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    train = _labelled_copy(pair_shards, tmp_path / "train", {"apple": 0, "banana": 1, "cherry": 2})
    val = _labelled_copy(pair_shards, tmp_path / "val", {"apple": 0, "cherry": 1})
    same = _labelled_copy(pair_shards, tmp_path / "same", {"apple": 0, "banana": 1, "cherry": 2})
    plain = pair_shards  # no labels: mixes with any map
    assert check_class_maps(str(train), [str(same), str(plain)]) == json.loads(
        (train / "classes.json").read_text()
    )
    with pytest.raises(ValueError, match="'cherry' is 2 in the first, 1 in the second"):
        check_class_maps(str(train), str(val))

    out = tmp_path / "run"
    args = ["--shards", str(train), "--out", str(out), "--steps", "1", *TINY]
    assert main([*args, "--val-shards", str(val)]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(train) in line and str(val) in line and "--class-map" in line
    assert main([*args, "--shards", str(train), str(val)]) == 2
    one_line(capsys.readouterr().err)
    assert main([*args, "--val-shards", str(same)]) == 0
    capsys.readouterr()
    # Evaluation compares its shards with each other and with the folders the run trained on.
    base = [
        "--checkpoint",
        str(out / "last.pt"),
        "--out",
        str(tmp_path / "e"),
        "--max-batches",
        "1",
    ]
    assert ev.main(["--shards", str(val), *base]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(val) in line and str(train) in line
    assert ev.main(["--shards", str(same), str(plain), *base]) == 0
