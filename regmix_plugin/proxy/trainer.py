"""The proxy trainer: a megatron-core GPTModel trained on a mixture (or a schedule of mixtures).

One process per data-parallel rank (``torchrun``); gloo on CPU, nccl on GPU; TP = PP = 1. Each step reads
the samples that :mod:`regmix_plugin.proxy.data` assigns to it, so runs are reproducible bit for bit and a
resumed run continues exactly where the checkpoint left off. The loss of a step is the mean over all loss
tokens of the global batch (summed per rank and divided by the all-reduced token count), so DP = 1 and
DP = W compute the same number up to floating-point summation order.

The run directory gets ``metrics.jsonl``, ``tb/``, ``checkpoints/``, ``config.yaml`` and, at the end,
``outcome.json`` (see docs/proxy.md and docs/metrics.md).
"""

from __future__ import annotations

import math
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from regmix_plugin.data.blend import BlendConfig, MixtureDatasets, build_datasets
from regmix_plugin.data.tokenizer import TokenizerInfo, infer_tokenizer
from regmix_plugin.errors import ConfigError, RegmixError
from regmix_plugin.io import atomic_write_json, atomic_write_text
from regmix_plugin.metrics import MetricsSink
from regmix_plugin.mixture import Mixture
from regmix_plugin.proxy import checkpoint, distributed
from regmix_plugin.proxy.config import ProxyConfig
from regmix_plugin.proxy.cpu_shims import causal_mask
from regmix_plugin.proxy.data import BatchLayout, ShardBatchSampler, StepBatchSampler, make_loader
from regmix_plugin.proxy.model import build_model, count_parameters
from regmix_plugin.schedule import Schedule

OUTCOME_FILE = "outcome.json"


class RunFailed(Exception):
    """Training stopped; ``reason`` goes to outcome.json."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class RunState:
    step: int = 0  # completed optimizer steps
    consumed_samples: int = 0  # training sequences consumed over all ranks and phases
    tokens: int = 0  # = consumed_samples * seq_length


@dataclass
class Outcome:
    status: str
    reason: str | None
    final_step: int
    tokens: int

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, "final_step": self.final_step, "tokens": self.tokens}


def lr_at(cfg: ProxyConfig, step: int) -> float:
    """Learning rate of the update that completes step ``step + 1``: linear warmup, then constant or cosine."""
    o = cfg.optim
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    if o.lr_schedule == "constant":
        return o.lr
    span = max(cfg.train.steps - o.warmup_steps, 1)
    progress = min((step - o.warmup_steps) / span, 1.0)
    return o.min_lr + 0.5 * (o.lr - o.min_lr) * (1 + math.cos(math.pi * progress))


def _tokenizer(cfg: ProxyConfig, mixture: Mixture) -> TokenizerInfo:
    if cfg.data.vocab_size is not None:
        return TokenizerInfo(vocab_size=cfg.data.vocab_size, eod=cfg.data.eod, name="config", type="byte")
    return infer_tokenizer(mixture)


def _with_eval_sets(mixture: Mixture, sets: dict[str, str]) -> Mixture:
    """``mixture`` with each evaluation set appended as a weight-0 domain: the datasets code then evaluates it
    like a domain and never samples it for training. Appended last, so the domains keep their indices (and
    their validation samples). The mixture the run records (its hash, ``mixture.json``) stays the one given."""
    if not sets:
        return mixture
    from regmix_plugin.mixture import Domain

    taken = [n for n in sets if n in mixture.names]
    if taken:
        raise ConfigError(f"eval.sets.{taken[0]}: is also a training domain of mixture {mixture.name!r}; rename the set "
                          "(a set is evaluated, never trained on)")
    out = Mixture.from_dict(mixture.to_dict())
    out.base_dir = mixture.base_dir  # the domains' relative prefixes still resolve against the mixture's folder
    for name, prefix in sets.items():
        full = os.path.abspath(prefix)
        out.domains.append(Domain(name=name, weight=0.0, prefixes=[full], valid_prefixes=[full]))
    for ext in (".bin", ".idx"):
        for name, prefix in sets.items():
            if not os.path.isfile(os.path.abspath(prefix) + ext):
                raise ConfigError(f"eval.sets.{name}: {os.path.abspath(prefix)}{ext} does not exist; build it with "
                                  "`regmix corpus build` or fix the prefix")
    return out


def _load_phases(schedule: Schedule) -> list[Mixture]:
    mixtures = [p.load() for p in schedule.phases]
    for i, m in enumerate(mixtures[1:], start=1):
        if m.names != mixtures[0].names:
            raise ConfigError(
                f"phases[{i}].mixture: domains {m.names} differ from phase 0's {mixtures[0].names}; "
                "every phase must list the same domains in the same order (weight 0 is allowed)"
            )
    return mixtures


class Trainer:
    def __init__(self, cfg: ProxyConfig, schedule: Schedule, run_dir: str | os.PathLike, env: distributed.DistEnv,
                 resume: bool = False, init_from: str | None = None) -> None:
        self.cfg, self.schedule, self.env = cfg, schedule, env
        self.run_dir = Path(run_dir)
        self.state = RunState()
        self.layout = BatchLayout(cfg.train.global_batch_size, cfg.train.micro_batch_size, env.world_size, env.rank)
        self.bounds = schedule.phase_bounds(cfg.train.steps)
        self.mixtures = _load_phases(schedule)
        tokenizer = _tokenizer(cfg, self.mixtures[0])
        cache_dir = cfg.data.cache_dir
        if cache_dir is None and env.world_size > 1:
            # megatron-core builds the indices on rank 0 and the other ranks read them from the cache, so
            # under DP the cache must be a folder all ranks see; the build's private temp folder is not.
            cache_dir = str(self.run_dir / "data_cache")
        self.datasets: list[MixtureDatasets] = [
            build_datasets(m, BlendConfig(
                seq_length=cfg.model.seq_length,
                train_samples=(end - start) * cfg.train.global_batch_size,
                valid_samples_per_domain=cfg.eval.samples_per_domain,
                # An evaluation set is read whole, so every run (any seed) is scored on the same text.
                valid_whole=tuple(cfg.eval.sets),
                seed=cfg.train.seed,
                cache_dir=cache_dir,
                tokenizer=tokenizer,
            ))
            for m, (start, end) in zip([_with_eval_sets(m, cfg.eval.sets) for m in self.mixtures], self.bounds)
        ]
        self.domain_names = self.datasets[0].domain_names
        self.vocab_size = tokenizer.vocab_size

        torch.manual_seed(cfg.train.seed)  # same initial weights on every rank
        if env.device.type == "cuda":
            # megatron-core's CUDA RNG tracker forks named states around dropout; they must exist.
            from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

            model_parallel_cuda_manual_seed(cfg.train.seed)
        self.model = build_model(cfg.model, self.vocab_size, env.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # No weight decay on biases and norm weights (1-D tensors), as in Megatron.
        decay = [p for p in self.params if p.ndim > 1]
        no_decay = [p for p in self.params if p.ndim <= 1]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.optim.lr, betas=(cfg.optim.beta1, cfg.optim.beta2), eps=cfg.optim.eps,
            # One fused kernel over all parameters instead of ~10 small ops per tensor: on the demo's 25k-parameter
            # proxy the update drops from 1.4 ms to 0.3 ms of a ~32 ms CPU step (BENCHMARKS.md).
            fused=True,
        )
        self.mask = causal_mask(cfg.model.seq_length, env.device)
        self.resumed_from: int | None = None
        if resume and (ckpt := checkpoint.find(self.run_dir / "checkpoints")) is not None:
            saved = checkpoint.load_training_state(ckpt, self.model, self.optimizer)
            self.state = RunState(saved["step"], saved["consumed_samples"], saved["tokens"])
            self.resumed_from = self.state.step
        elif init_from is not None:
            ckpt = checkpoint.find(init_from)
            if ckpt is None:
                raise ConfigError(f"--init-from: no checkpoint in {init_from}; give a checkpoint folder or a run directory")
            checkpoint.load_model(ckpt, self.model)
        self.sink: MetricsSink | None = None

    # ---- the loop ---------------------------------------------------------------------------------
    def run(self) -> None:
        cfg = self.cfg
        phase = self.schedule.phase_index(self.state.step)
        if self.env.is_main:
            self.sink = MetricsSink(
                self.run_dir, self.mixtures[phase].content_hash(), self.mixtures[phase].name,
                tensorboard=cfg.metrics.tensorboard, wandb=cfg.metrics.wandb,
                wandb_project=cfg.metrics.wandb_project, config=cfg.to_dict(),
                # A restart from step s drops what an earlier attempt logged past s (all of it when s = 0).
                resume_step=self.state.step,
            )
        bar = _progress(cfg, self.env, self.state.step)
        try:
            while self.state.step < cfg.train.steps:
                phase = self.schedule.phase_index(self.state.step)
                start, end = self.bounds[phase]
                if self.sink is not None:
                    self.sink.set_mixture(self.mixtures[phase].content_hash(), self.mixtures[phase].name)
                batches = iter(self._train_loader(phase, self.state.step - start, end - start))
                while self.state.step < end:
                    loss = self._train_step([next(batches) for _ in range(self.layout.num_micro_batches)])
                    self._after_step(loss)
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        finally:
            bar.close()
            if self.sink is not None:
                self.sink.close()

    def _train_loader(self, phase: int, first_step: int, end_step: int):
        sampler = StepBatchSampler(self.layout, first_step, end_step)
        ds = self.datasets[phase].train
        if self.cfg.data.loader == "dali":
            from regmix_plugin.proxy.dali import DaliLoader

            # On a GPU, DALI hands the batches over in device memory.
            device_id = self.env.device.index if self.env.device.type == "cuda" else None
            return DaliLoader(ds, sampler, self.cfg.model.seq_length, device_id=device_id)
        return make_loader(ds, sampler, self.cfg.data.num_workers)

    def _forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token loss [b, s] and loss mask [b, s] of one micro batch."""
        dev = self.env.device
        tokens = batch["tokens"].to(dev, non_blocking=True).long()
        labels = batch["labels"].to(dev, non_blocking=True).long()
        position_ids = batch["position_ids"].to(dev, non_blocking=True).long()
        loss = self.model(tokens, position_ids, self.mask, labels=labels)  # [b, s]
        return loss, batch["loss_mask"].to(dev, non_blocking=True).float()

    def _train_step(self, micro_batches: list[dict[str, torch.Tensor]]) -> float:
        step = self.state.step + 1
        if self.cfg.fault.crash_at_step == step:
            raise RuntimeError(f"injected crash at step {step} (fault.crash_at_step)")
        self.model.train()
        # Normalise by the loss tokens of the whole global batch, so that DP ranks and micro batches add up.
        count = torch.zeros((), dtype=torch.float64, device=self.env.device)
        for mb in micro_batches:
            count += mb["loss_mask"].sum().to(self.env.device)
        distributed.all_reduce_sum(count)
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), dtype=torch.float64, device=self.env.device)
        for mb in micro_batches:
            loss, mask = self._forward(mb)
            scaled = (loss * mask).sum() / count.float()
            scaled.backward()
            total += scaled.detach().double()
        distributed.all_reduce_sum(total)
        value = total.item()
        if self.cfg.fault.nan_at_step == step:
            value = float("nan")
        if not math.isfinite(value):
            raise RunFailed(f"nan loss at step {step}" if math.isnan(value) else f"inf loss at step {step}")
        distributed.all_reduce_grads(self.params)
        if self.cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.optim.grad_clip)
        lr = lr_at(self.cfg, self.state.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.state.step = step
        self.state.consumed_samples += self.cfg.train.global_batch_size
        self.state.tokens = self.state.consumed_samples * self.cfg.model.seq_length
        return value

    def _after_step(self, loss: float) -> None:
        cfg, step = self.cfg, self.state.step
        last = step == cfg.train.steps
        if self.sink is not None and (step % cfg.train.log_every == 0 or last):
            self.sink.log(step, self.state.tokens, {"train/loss": loss, "lr": lr_at(cfg, step - 1)})
        if (cfg.eval.every and step % cfg.eval.every == 0) or (last and cfg.eval.at_end):
            losses = self.evaluate()
            if self.sink is not None:
                self.sink.log(step, self.state.tokens, losses)
        if (cfg.checkpoint.every and step % cfg.checkpoint.every == 0) or (last and cfg.checkpoint.at_end):
            self.save_checkpoint()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Per-domain validation loss: token-weighted mean over each domain's validation set, exact under DP."""
        self.model.eval()
        valid = self.datasets[0].valid_concat
        n_domains = len(self.domain_names)
        sums = torch.zeros(n_domains, dtype=torch.float64, device=self.env.device)
        counts = torch.zeros(n_domains, dtype=torch.float64, device=self.env.device)
        sampler = ShardBatchSampler(len(valid), self.cfg.eval.batch_size, self.env.world_size, self.env.rank)
        for batch in make_loader(valid, sampler, 0):
            loss, mask = self._forward(batch)
            ids = batch["dataset_id"].to(self.env.device).long()  # [b]
            sums.index_add_(0, ids, (loss * mask).sum(dim=1).double())
            counts.index_add_(0, ids, mask.sum(dim=1).double())
        distributed.all_reduce_sum(sums)
        distributed.all_reduce_sum(counts)
        return {f"valid/{name}/loss": (sums[i] / counts[i]).item() for i, name in enumerate(self.domain_names)}

    def save_checkpoint(self) -> None:
        if self.env.is_main:
            checkpoint.save(self.run_dir / "checkpoints", self.state.step, self.model, self.optimizer, {
                "consumed_samples": self.state.consumed_samples,
                "tokens": self.state.tokens,
                "phase": self.schedule.phase_index(max(self.state.step - 1, 0)),
                "world_size": self.env.world_size,
            })
        if self.env.world_size > 1:
            torch.distributed.barrier()


def _progress(cfg: ProxyConfig, env: distributed.DistEnv, initial: int):
    from tqdm import tqdm

    # Into a log file (a sweep's log.txt) a bar redrawn 10 times a second is noise: update it every 30 s there.
    interval = 0.1 if sys.stderr.isatty() else 30.0
    return tqdm(total=cfg.train.steps, initial=initial, desc="train", unit="step", dynamic_ncols=True,
                mininterval=interval, disable=not (cfg.train.progress and env.is_main), file=sys.stderr)


def write_run_config(run_dir: Path, cfg: ProxyConfig, schedule: Schedule, env: distributed.DistEnv,
                     extra: dict[str, Any]) -> None:
    doc = cfg.to_dict()
    doc["run"] = dict(extra, world_size=env.world_size, device=str(env.device),
                      schedule=[{"start": p.start, "mixture": p.mixture_path} for p in schedule.phases])
    if env.device.type == "cpu":
        # Which kernels computed this run: torch's CPU kernels round differently per instruction set (AVX512,
        # AVX2, ...), so two machines agree bit for bit only with the same torch and the same capability
        # (docs/DECISIONS.md 65; the demo pins it to AVX2).
        doc["run"].update(torch=str(torch.__version__), cpu_capability=str(torch.backends.cpu.get_cpu_capability()))
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(doc, sort_keys=False))


def train(cfg: ProxyConfig, schedule: Schedule, run_dir: str | os.PathLike, resume: bool = False,
          init_from: str | None = None) -> Outcome:
    """Run one proxy training; always returns (or, for a bad input, raises) after recording outcome.json."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    # Before the process group exists, the launcher's RANK says who owns the run directory.
    is_main = int(os.environ.get("RANK", "0")) == 0
    trainer: Trainer | None = None
    try:
        env = distributed.setup(cfg.train.device)
        trainer = Trainer(cfg, schedule, run_dir, env, resume=resume, init_from=init_from)
        if is_main:
            write_run_config(run_dir, cfg, schedule, env, {
                "resume": resume, "init_from": init_from, "resumed_from_step": trainer.resumed_from,
                **count_parameters(trainer.model), "vocab_size": trainer.vocab_size,
            })
        trainer.run()
        outcome = Outcome("completed", None, trainer.state.step, trainer.state.tokens)
    except RunFailed as e:
        outcome = _failed(trainer, e.reason)
    except RegmixError as e:
        _record(run_dir, is_main, _failed(trainer, f"error: {e}"))
        distributed.teardown()
        raise
    except KeyboardInterrupt:
        _record(run_dir, is_main, _failed(trainer, "interrupted"))
        distributed.teardown()
        raise
    except Exception as e:  # a crash: record it, show the traceback, exit non-zero
        traceback.print_exc()
        outcome = _failed(trainer, f"exception: {type(e).__name__}: {e}")
    _record(run_dir, is_main, outcome)
    distributed.teardown()
    return outcome


def _failed(trainer: Trainer | None, reason: str) -> Outcome:
    state = trainer.state if trainer is not None else RunState()
    return Outcome("failed", reason, state.step, state.tokens)


def _record(run_dir: Path, is_main: bool, outcome: Outcome) -> None:
    if is_main:
        atomic_write_json(run_dir / OUTCOME_FILE, outcome.to_dict())
