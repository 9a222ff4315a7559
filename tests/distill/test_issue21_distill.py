"""Issue 21 (one concept per file, each constant once), the ``distill`` side."""

from __future__ import annotations

import pytest
import torch
from codeshape import import_graph, import_loop, long_functions

from distill import runtime, trainer


@pytest.fixture
def four_gpus(monkeypatch):
    """CUDA that reports four devices; ``set_device`` records what it was given."""
    chosen: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    return chosen


@pytest.mark.parametrize(
    ("requested", "local_rank", "index"),
    [("cuda", 0, 0), ("cuda", 3, 3), ("cuda:0", 2, 2), ("cuda:1", 0, 1), ("cuda:1", 2, 3)],
)
def test_each_torchrun_process_takes_its_own_gpu(four_gpus, requested, local_rank, index):
    """``cuda:N`` is the first GPU of a node's processes: local rank r runs on GPU N + r
    (it used to put every rank on GPU N)."""
    assert runtime.resolve_device(requested, local_rank) == torch.device("cuda", index)


def test_a_gpu_past_the_last_is_a_one_line_error(four_gpus):
    with pytest.raises(ValueError, match=r"^--device cuda:2 \+ local rank 2: this machine has 4"):
        runtime.resolve_device("cuda:2", 2)
    with pytest.raises(ValueError, match=r"^--device cuda:4: this machine has 4 CUDA devices$"):
        runtime.resolve_device("cuda:4")


def test_setup_process_reads_the_local_rank(four_gpus, monkeypatch):
    """torchrun's LOCAL_RANK picks the GPU (one process here, so no process group is made)."""
    monkeypatch.setenv("LOCAL_RANK", "1")
    proc = runtime.setup_process("cuda:2")
    assert proc.device == torch.device("cuda", 3)
    assert four_gpus == [torch.device("cuda", 3)]


def test_norms_and_biases_are_not_decayed(pair_shards, tmp_path):
    """Weight decay shrinks the network's weights (≥ 2-D) only: a step with zero gradients
    (AdamW: the decoupled decay alone) leaves the 1-D parameters — norm scales and shifts,
    biases — and the front-end as they were, and scales every weight by 1 − lr·weight_decay."""
    from distill.config import TrainConfig

    config = TrainConfig(
        shards=str(pair_shards), out=str(tmp_path / "run"), steps=2, batch_size=2, crop=32,
        num_workers=0, progress=False, device="cpu", warmup_steps=0, lr=1e-2, weight_decay=0.5,
    )  # fmt: skip
    t = trainer.Trainer(config)
    front = {id(p) for p in t.student.frontend.parameters()}
    params = [p for p in t.step_module.parameters() if p.requires_grad]
    assert any(p.ndim == 1 and id(p) not in front for p in params)  # BatchNorm, biases
    before = {id(p): p.detach().clone() for p in params}
    for p in params:
        p.grad = torch.zeros_like(p)
    t.optimizer.step()
    for p in params:
        if p.ndim <= 1 or id(p) in front:
            assert torch.equal(p.detach(), before[id(p)])
        else:
            torch.testing.assert_close(p.detach(), before[id(p)] * (1 - 1e-2 * 0.5))


def test_the_white_balance_modes_are_written_once():
    """``distill.config`` (no torch) holds the modes and the default; the front-end and the
    model factory use them."""
    from distill import config, frontend, models

    assert frontend.WB_MODES is config.WB_MODES
    assert models.DEFAULT_WB is config.DEFAULT_WB in config.WB_MODES
    assert config.TrainConfig.__dataclass_fields__["raw_wb"].metadata["choices"] == config.WB_MODES


def test_distill_modules_import_without_a_loop_and_keep_functions_short():
    assert not long_functions("distill")
    assert import_loop(import_graph("distill")) is None
