"""Multi-phase schedules: the file format, and the proxy trainer's switch with exact sample accounting."""

from __future__ import annotations

import pytest
from proxy_helpers import TEST_OVERRIDES, TINY_CONFIG, make_corpus, write_mixture

from regmix_plugin.errors import ConfigError
from regmix_plugin.metrics import read_metrics
from regmix_plugin.proxy import distributed
from regmix_plugin.proxy.config import ProxyConfig
from regmix_plugin.proxy.data import BatchLayout, StepBatchSampler
from regmix_plugin.proxy.trainer import Trainer
from regmix_plugin.schedule import Schedule

GBS = 4


def _schedule_file(tmp_path, text: str):
    p = tmp_path / "schedule.yaml"
    p.write_text(text)
    return p


def test_schedule_file_and_megatron_mapping(tmp_path):
    p = _schedule_file(tmp_path, "phases:\n  - {start: 0, mixture: a.json}\n  - {start: 100, mixture: sub/b.json}\n")
    s = Schedule.load(p)
    assert [ph.mixture_path for ph in s.phases] == [str(tmp_path / "a.json"), str(tmp_path / "sub" / "b.json")]
    assert s.megatron_args() == ["--phase-transition-iterations", "100"]
    assert s.phase_bounds(250) == [(0, 100), (100, 250)]
    assert [s.phase_index(i) for i in (0, 99, 100, 249)] == [0, 0, 1, 1]
    assert Schedule.single("m.json").megatron_args() == []
    with pytest.raises(ConfigError, match=r"phases\[1\].start: 100 is not before the end of training"):
        s.phase_bounds(100)


@pytest.mark.parametrize("text, message", [
    ("phases: []\n", "the list is empty"),
    ("phases:\n  - {start: 5, mixture: a.json}\n", r"phases\[0\].start: 5 must be 0"),
    ("phases:\n  - {start: 0, mixture: a.json}\n  - {start: 0, mixture: b.json}\n", r"phases\[1\].start: 0 is not after"),
    ("phases:\n  - {start: -1, mixture: a.json}\n", r"phases\[0\].start: -1 is not an iteration"),
    ("phases:\n  - {start: 0}\n", r"phases\[0\]: expected exactly the keys start and mixture"),
    ("mixtures: []\n", "phases: missing"),
    ("phases: [\n", "not valid YAML"),
])
def test_bad_schedules_are_one_line_errors(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as e:
        Schedule.load(_schedule_file(tmp_path, text))
    assert "\n" not in str(e.value)


def test_batch_plan_covers_each_phase_exactly_once_under_any_resume_point_and_dp():
    for world in (1, 2):
        plans = [BatchLayout(8, 2, world, r) for r in range(world)]
        uninterrupted = sorted(i for lay in plans for b in StepBatchSampler(lay, 0, 5) for i in b)
        assert uninterrupted == list(range(40))
        for resume_at in range(5):
            before = [i for lay in plans for b in StepBatchSampler(lay, 0, resume_at) for i in b]
            after = [i for lay in plans for b in StepBatchSampler(lay, resume_at, 5) for i in b]
            assert sorted(before + after) == list(range(40))


class RecordingDataset:
    """A transparent wrapper that records which sample indices the trainer reads."""

    def __init__(self, base, log: list, phase: int) -> None:
        self.base, self.log, self.phase = base, log, phase

    def __len__(self):
        return len(self.base)

    def __getitem__(self, idx):
        self.log.append((self.phase, int(idx)))
        return self.base[idx]


def _run(schedule, run_dir, log, resume=False, *extra):
    cfg = ProxyConfig.load(TINY_CONFIG, [*TEST_OVERRIDES, "checkpoint.every=4", *extra])
    env = distributed.setup("cpu")
    try:
        trainer = Trainer(cfg, schedule, run_dir, env, resume=resume)
        for p, ds in enumerate(trainer.datasets):
            ds.train = RecordingDataset(ds.train, log, p)
        trainer.run()
        return trainer
    finally:
        distributed.teardown()


def test_proxy_switches_mixture_without_repeating_or_skipping_samples(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    make_corpus(root, ("web", "code"), docs=24)
    a = write_mixture(root, "phase_a", {"web": 1.0})
    b = write_mixture(root, "phase_b", {"web": 0.5, "code": 0.5})
    schedule = Schedule.load(_schedule_file(tmp_path, f"phases:\n  - {{start: 0, mixture: {a}}}\n"
                                                      f"  - {{start: 6, mixture: {b}}}\n"))
    log: list = []
    trainer = _run(schedule, tmp_path / "run", log)
    # 12 steps x 4 samples: phase 0 reads its blend's samples 0..23, phase 1 reads its own 0..23.
    assert log == [(0, i) for i in range(24)] + [(1, i) for i in range(24)]
    assert trainer.state.consumed_samples == 48 and trainer.state.tokens == 48 * 32
    assert set(trainer.datasets[0].train.base.domain_ids[:24]) == {0}  # phase_a is all web
    names = {r["step"]: r["mixture_name"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")}
    assert names[6] == "phase_a" and names[8] == "phase_b" and names[12] == "phase_b"

    # Crash at step 9 (phase 1), resume from the step-8 checkpoint: the retried steps read the same samples.
    crashed: list = []
    with pytest.raises(RuntimeError, match="injected crash at step 9"):
        _run(schedule, tmp_path / "run2", crashed, False, "fault.crash_at_step=9")
    resumed: list = []
    again = _run(schedule, tmp_path / "run2", resumed, True)
    assert crashed == log[:36]  # steps 1-9 (step 9 was read, then crashed)
    assert resumed == log[32:]  # steps 9-12: phase 1 samples 8..23
    assert again.state.consumed_samples == 48
    first = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "train/loss" in r]
    second = [r for r in read_metrics(tmp_path / "run2" / "metrics.jsonl") if "train/loss" in r]
    assert [r["train/loss"] for r in first] == [r["train/loss"] for r in second]
