"""The Megatron-LM integration's parts against the real megatron.training parser, samplers and datasets (CPU).

tests/test_megatron_e2e.py runs the whole of Megatron's pretrain(); these tests pin each decision on its own.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from proxy_helpers import REPO, make_corpus, write_mixture

from regmix_plugin.errors import ConfigError
from regmix_plugin.megatron.args import add_regmix_args, check_regmix_args
from regmix_plugin.megatron.launch import Kernels, prepare_launch, resume_schedule
from regmix_plugin.megatron.loss import DomainTally, per_domain_loss
from regmix_plugin.schedule import Schedule

MODEL_FLAGS = [
    "--eval-interval", "4", "--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4", "--seq-length", "32",
    "--max-position-embeddings", "32", "--micro-batch-size", "2", "--global-batch-size", "4", "--lr", "1e-3",
    # NullTokenizer --vocab-size 257 has eod 256: the ids of the plugin's byte tokenizer.
    "--tokenizer-type", "NullTokenizer", "--vocab-size", "257",
]


@pytest.fixture
def parse(monkeypatch):
    """Parse a Megatron-LM command line with the plugin's flags; Megatron's globals are reset afterwards."""
    from megatron.training.arguments import parse_and_validate_args
    from megatron.training.global_vars import unset_global_variables

    def _parse(argv: list[str]):
        monkeypatch.setattr(sys, "argv", ["pretrain_gpt.py", *argv])
        unset_global_variables()
        return parse_and_validate_args(extra_args_provider=add_regmix_args)

    yield _parse
    unset_global_variables()


@pytest.fixture
def process_group():
    """A one-rank gloo process group with megatron-core's model-parallel state (TP = PP = 1)."""
    from regmix_plugin.proxy import distributed

    distributed.setup("cpu")
    yield
    distributed.teardown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("mcorpus")
    make_corpus(root, ("web", "code", "books"), docs=24)
    return root


def test_real_parser_accepts_the_plugin_flags(parse, corpus):
    mix = str(corpus / "natural.json")
    args = parse([*MODEL_FLAGS, "--train-iters", "10", "--data-mixture-from", mix, "--regmix-metrics-dir", "/tmp/m",
                  "--regmix-valid-samples-per-domain", "8", "--no-regmix-per-domain-eval"])
    assert args.data_mixture_from == mix and args.regmix_metrics_dir == "/tmp/m"
    assert args.regmix_valid_samples_per_domain == 8 and args.regmix_per_domain_eval is False
    check_regmix_args(args)
    args = parse([*MODEL_FLAGS, "--train-iters", "10", "--data-mixture-from", mix])
    assert args.regmix_per_domain_eval is True and args.data_schedule_from is None


@pytest.mark.parametrize("flags, message", [
    (["--mock-data"], "--mock-data: not allowed with --data-mixture-from"),
    (["--data-path", "1.0", "/x/y"], "--data-path: not allowed"),
    (["--full-validation"], "--full-validation: not allowed with --data-mixture-from; every evaluation already"),
    (["--multiple-validation-sets"], "--multiple-validation-sets: not allowed"),
    (["--sft"], "--sft: not allowed"),
    (["--dataloader-inter-document-masking"], "--dataloader-inter-document-masking: not allowed"),
    (["--dataloader-type", "cyclic"], "--dataloader-type cyclic: the mixture's blend is already shuffled"),
    (["--split", "90,10,0"], "--split: not allowed with --data-mixture-from; the train blend uses all"),
])
def test_conflicting_data_flags_are_one_line_errors(parse, corpus, flags, message):
    args = parse([*MODEL_FLAGS, "--train-iters", "10", "--data-mixture-from", str(corpus / "natural.json"), *flags])
    with pytest.raises(ConfigError, match=message):
        check_regmix_args(args)


# Every flag Megatron-LM's pretrain_gpt.py reads into its GPTDatasetConfig (core_gpt_dataset_config_from_args),
# given a non-default value: each is honoured (the value reaches megatron-core's dataset config) or refused in
# one line. Issue 23 point 8: --split, --num-dataset-builder-threads, --object-storage-cache-path,
# --dataloader-fast-cache-load, --dataloader-defer-npy-index-mmap, --per-dataset-sequences-path,
# --allow-ambiguous-pad-tokens and --hybrid-context-parallel were accepted and silently ignored.
DATA_FLAGS = {
    "--split": (["99,1,0"], None),
    "--object-storage-cache-path": (["/tmp/idx-cache"], None),
    "--dataloader-fast-cache-load": ([], None),
    "--dataloader-defer-npy-index-mmap": ([], None),
    "--per-dataset-sequences-path": (["/tmp/sequences.json"], None),
    "--allow-ambiguous-pad-tokens": ([], None),
    "--hybrid-context-parallel": (["--calculate-per-token-loss"], None),
    "--num-dataset-builder-threads": (["3"], ("num_dataset_builder_threads", 3)),
    "--reset-position-ids": ([], ("reset_position_ids", True)),
    "--reset-attention-mask": ([], ("reset_attention_mask", True)),
    "--eod-mask-loss": ([], ("eod_mask_loss", True)),
    "--no-create-attention-mask-in-dataloader": ([], ("create_attention_mask", False)),
    "--no-mmap-bin-files": ([], ("mmap_bin_files", False)),
    "--mid-level-dataset-surplus": (["0.01"], ("mid_level_dataset_surplus", 0.01)),
}


@pytest.mark.parametrize("flag", DATA_FLAGS)
def test_every_data_flag_is_honoured_or_refused(flag, parse, corpus):
    from regmix_plugin.data.blend import GPT_DEFAULTS
    from regmix_plugin.megatron.datasets import gpt_dataset_options

    values, honoured = DATA_FLAGS[flag]
    args = parse([*MODEL_FLAGS, "--train-iters", "10", "--data-mixture-from", str(corpus / "natural.json"),
                  flag, *values])
    if honoured is None:
        with pytest.raises(ConfigError, match=f"^{flag}: not allowed with --data-mixture-from; .*(drop|use)"):
            check_regmix_args(args)
        return
    check_regmix_args(args)
    field, value = honoured
    assert gpt_dataset_options(args)[field] == value
    # ... and it is not the value a launch without the flag gets.
    plain = gpt_dataset_options(parse([*MODEL_FLAGS, "--train-iters", "10", "--data-mixture-from",
                                       str(corpus / "natural.json")]))
    assert plain[field] != value
    assert field in GPT_DEFAULTS or field in ("num_dataset_builder_threads", "mmap_bin_files")


def test_dataset_settings_reach_megatron_cores_config(parse, corpus, process_group):
    """The provider builds megatron-core's datasets with the flags' values (here, several builder threads)."""
    from regmix_plugin.megatron.datasets import DatasetsProvider, MixtureSource

    args = parse([*MODEL_FLAGS, "--train-iters", "10", "--data-mixture-from", str(corpus / "natural.json"),
                  "--num-dataset-builder-threads", "2", "--eod-mask-loss", "--data-cache-path", str(corpus / "cache")])
    train, valid, _ = DatasetsProvider(MixtureSource.from_args(args))([8, None, None])
    config = train.base.config
    assert config.num_dataset_builder_threads == 2 and config.eod_mask_loss and config.create_attention_mask
    assert valid.parts[0].base.config.num_dataset_builder_threads == 2


def test_blend_config_refuses_options_it_owns_or_does_not_know():
    from regmix_plugin.data.blend import BlendConfig

    with pytest.raises(ConfigError, match="gpt_options.split: set by the dataset builder itself"):
        BlendConfig(seq_length=8, train_samples=4, gpt_options={"split": "1,0,0"})
    with pytest.raises(ConfigError, match="gpt_options.eod_mask: not a field of megatron-core's GPTDatasetConfig"):
        BlendConfig(seq_length=8, train_samples=4, gpt_options={"eod_mask": True})


def test_a_launch_reads_its_mixture_files_once(parse, corpus, tmp_path, monkeypatch):
    """Issue 24: components() read regmix.json, the provider twice more, the hook at every evaluation."""
    from regmix_plugin.megatron.pretrain_gpt import components
    from regmix_plugin.mixture import Mixture

    a = write_mixture(corpus, "once_a", {"web": 1.0})
    b = write_mixture(corpus, "once_b", {"code": 1.0})
    sched = tmp_path / "s.yaml"
    sched.write_text(f"phases:\n  - {{start: 0, mixture: {a}}}\n  - {{start: 4, mixture: {b}}}\n")
    args = parse([*MODEL_FLAGS, "--train-samples", "48", "--data-schedule-from", str(sched), "--save",
                  str(tmp_path / "ckpt"), "--save-interval", "4", "--phase-transition-iterations", "4"])
    reads = []
    load = Mixture.load.__func__
    monkeypatch.setattr(Mixture, "load", classmethod(lambda cls, path: reads.append(str(path)) or load(cls, path)))
    import megatron.training.training as mtraining

    monkeypatch.setattr(mtraining, "evaluate_and_print_results", mtraining.evaluate_and_print_results)
    provider, _ = components(args)
    for iteration in (0, 5):
        assert provider.source.mixture(iteration).name == ("once_a" if iteration < 4 else "once_b")
    assert sorted(reads) == sorted([str(a), str(b)])


# ---- what the entry point settles before Megatron parses -------------------------------------------------

NOTHING = Kernels.of(te=False)
EVERYTHING = Kernels.of(te=True, apex=True)


def test_without_te_or_apex_the_local_implementation_flags_are_added():
    launch = prepare_launch(["--num-layers", "2"], environ={}, kernels=NOTHING)
    assert launch.argv == ["--num-layers", "2", "--transformer-impl", "local", "--no-rope-fusion",
                           "--no-gradient-accumulation-fusion", "--no-masked-softmax-fusion", "--no-persist-layer-norm"]
    assert launch.notes == [
        "Transformer Engine is not installed; added --transformer-impl local --no-rope-fusion",
        "apex's fused_weight_gradient_mlp_cuda is not importable (megatron-core's output layer needs it for "
        "gradient accumulation fusion); added --no-gradient-accumulation-fusion",
        "apex's fused softmax kernels are not importable; added --no-masked-softmax-fusion",
        "apex is not installed (the local layer norm is torch's); added --no-persist-layer-norm",
    ]
    # Flags the user gave are kept and not repeated.
    launch = prepare_launch(["--transformer-impl", "local", "--no-persist-layer-norm"], environ={}, kernels=NOTHING)
    assert launch.argv.count("--no-persist-layer-norm") == 1 and launch.argv.count("--transformer-impl") == 1
    # With Transformer Engine and apex nothing is added.
    assert prepare_launch(["--num-layers", "2"], environ={}, kernels=EVERYTHING).argv == ["--num-layers", "2"]
    with pytest.raises(ConfigError, match="--transformer-impl transformer_engine: Transformer Engine is not installed"):
        prepare_launch(["--transformer-impl", "transformer_engine"], environ={}, kernels=NOTHING)


def test_the_added_flags_are_what_megatron_needs_without_te_or_apex(parse, corpus):
    """The stock defaults fail to build a GPT model here (no TE, no apex); the added flags make it build."""
    from megatron.training.argument_utils import gpt_config_from_args

    args = parse([*MODEL_FLAGS, "--train-iters", "4", "--position-embedding-type", "rope"])
    with pytest.raises(Exception, match="apply_rope_fusion is not available|transformer_engine|Transformer Engine"):
        gpt_config_from_args(args)
    argv = prepare_launch([*MODEL_FLAGS, "--train-iters", "4", "--position-embedding-type", "rope"], environ={}).argv
    args = parse(argv)
    assert args.transformer_impl == "local" and not args.gradient_accumulation_fusion and not args.apply_rope_fusion
    assert args.no_persist_layer_norm and not args.masked_softmax_fusion
    gpt_config_from_args(args)  # builds


def test_tensor_parallel_sets_cuda_device_max_connections_once():
    env: dict = {}
    notes = prepare_launch(["--tensor-model-parallel-size", "2"], environ=env, kernels=EVERYTHING).notes
    assert env == {"CUDA_DEVICE_MAX_CONNECTIONS": "1"} and any("CUDA_DEVICE_MAX_CONNECTIONS=1" in n for n in notes)
    env = {"CUDA_DEVICE_MAX_CONNECTIONS": "8"}  # the user's choice is kept
    assert prepare_launch(["--context-parallel-size", "2"], environ=env, kernels=EVERYTHING).notes == []
    assert env == {"CUDA_DEVICE_MAX_CONNECTIONS": "8"}
    for argv in (["--tensor-model-parallel-size", "1"], ["--tensor-model-parallel-size", "2", "--use-megatron-fsdp"]):
        env = {}
        prepare_launch(argv, environ=env, kernels=EVERYTHING)
        assert env == {}


def test_dataset_helpers_are_not_rebuilt_when_the_wheel_ships_them(parse, process_group):
    """initialize_megatron's _compile_dependencies runs `make` where the wheel has no Makefile, then sys.exit(1)."""
    import megatron.core.datasets.utils as dataset_utils
    from megatron.training.initialize import _compile_dependencies

    from regmix_plugin.megatron.launch import use_prebuilt_dataset_helpers

    parse([*MODEL_FLAGS, "--train-iters", "4"])
    stock = dataset_utils.compile_helpers
    try:
        with pytest.raises(SystemExit):
            _compile_dependencies()  # the defect, as it happens on rank 0 of a real launch
        assert use_prebuilt_dataset_helpers()
        _compile_dependencies()  # returns: the prebuilt helpers are used
        from megatron.core.datasets import helpers_cpp

        assert hasattr(helpers_cpp, "build_blending_indices")
    finally:
        dataset_utils.compile_helpers = stock


# ---- schedules ------------------------------------------------------------------------------------------

def test_schedule_maps_to_phase_transition_iterations(parse, corpus, tmp_path):
    """Megatron's own phase arithmetic (get_train_valid_test_num_samples) matches Schedule.phase_bounds."""
    from megatron.training.training import get_train_valid_test_num_samples, update_train_iters

    from regmix_plugin.megatron.datasets import MixtureSource

    a = write_mixture(corpus, "phase_a", {"web": 1.0})
    b = write_mixture(corpus, "phase_b", {"code": 1.0})
    sched_path = tmp_path / "s.yaml"
    sched_path.write_text(f"phases:\n  - {{start: 0, mixture: {a}}}\n  - {{start: 4, mixture: {b}}}\n"
                          f"  - {{start: 9, mixture: {a}}}\n")
    argv = prepare_launch([*MODEL_FLAGS, "--train-samples", "48", "--data-schedule-from", str(sched_path),
                           "--save", str(tmp_path / "ckpt"), "--save-interval", "4"], environ={},
                          kernels=EVERYTHING).argv
    assert argv[-2:] == ["--phase-transition-iterations", "4,9"]
    args = parse(argv)
    check_regmix_args(args)
    assert args.phase_transition_iterations == [4, 9]
    update_train_iters(args)  # as pretrain() does
    schedule = Schedule.load(sched_path)
    bounds = schedule.phase_bounds(48 // 4)
    for iteration in range(12):
        args.iteration = iteration
        start, end = bounds[schedule.phase_index(iteration)]
        assert get_train_valid_test_num_samples()[0] == (end - start) * 4
        assert MixtureSource.from_args(args).mixture(iteration).name == ("phase_b" if 4 <= iteration < 9 else "phase_a")
    # Megatron 0.19 computes phase sizes from --train-samples; with --train-iters its arithmetic fails.
    args = parse([*MODEL_FLAGS, "--train-iters", "12", "--data-schedule-from", str(sched_path)])
    with pytest.raises(ConfigError, match="--train-samples"):
        check_regmix_args(args)
    args = parse([*MODEL_FLAGS, "--train-samples", "48", "--data-schedule-from", str(sched_path)])
    with pytest.raises(ConfigError, match="--save: a --data-schedule-from run needs --save"):
        check_regmix_args(args)


def test_a_schedule_relaunch_resumes_from_its_own_save(parse, corpus, tmp_path):
    """Without this, a relaunch without --load (or with --load of a base model) restarts phase 0 forever."""
    a = write_mixture(corpus, "phase_a", {"web": 1.0})
    sched = tmp_path / "s.yaml"
    sched.write_text(f"phases:\n  - {{start: 0, mixture: {a}}}\n  - {{start: 4, mixture: {a}}}\n")
    save = tmp_path / "ckpt"
    base = [*MODEL_FLAGS, "--train-samples", "48", "--data-schedule-from", str(sched), "--save", str(save),
            "--save-interval", "4"]
    args = parse([*base, "--load", "/models/base", "--finetune"])
    assert resume_schedule(args) == (True, []) and args.load == "/models/base" and args.finetune  # first launch
    save.mkdir()
    (save / "latest_checkpointed_iteration.txt").write_text("4")
    go, notes = resume_schedule(args)
    assert go and args.load == str(save) and not args.finetune and "resuming the schedule" in notes[0]
    (save / "latest_checkpointed_iteration.txt").write_text("12")
    go, notes = resume_schedule(parse(base))
    assert not go and notes == [f"the schedule is complete: {save} holds iteration 12 of 12; nothing to train"]
    (save / "latest_checkpointed_iteration.txt").write_text("release")
    with pytest.raises(ConfigError, match="--save: .* holds 'release', not an iteration"):
        resume_schedule(parse(base))


def test_schedule_phases_must_evaluate_the_same_domains(corpus, tmp_path):
    """Phases that list other domains (or the same in another order) used to mislabel per-domain losses."""
    from regmix_plugin.mixture import Mixture

    a = write_mixture(corpus, "order_a", {"web": 0.5, "code": 0.5})
    reordered = Mixture.load(a).reordered(["books", "code", "web"])
    b = reordered.save(corpus / "order_b.json")
    sched = tmp_path / "s.yaml"
    sched.write_text(f"phases:\n  - {{start: 0, mixture: {a}}}\n  - {{start: 4, mixture: {b}}}\n")
    assert Schedule.load(sched).domain_order() == ["web", "code", "books"]  # another order is fine
    natural = Mixture.load(corpus / "natural.json")
    two = Mixture.from_weights({"web": 1.0, "code": 1.0}, template=natural, name="two").save(corpus / "two.json")
    sched.write_text(f"phases:\n  - {{start: 0, mixture: {a}}}\n  - {{start: 4, mixture: {two}}}\n")
    with pytest.raises(ConfigError, match=r"phases\[1\].mixture: .* lists domains -books against phases\[0\]"):
        Schedule.load(sched).domain_order()
    moved = natural.to_dict()
    moved["domains"][2]["valid_prefixes"] = ["code/valid"]
    other = Mixture.from_dict(moved)
    other.base_dir = str(corpus)
    other = other.save(corpus / "moved.json")
    sched.write_text(f"phases:\n  - {{start: 0, mixture: {a}}}\n  - {{start: 4, mixture: {other}}}\n")
    with pytest.raises(ConfigError, match="domain 'books' is validated on .*code/valid but in phases"):
        Schedule.load(sched).domain_order()


# ---- datasets -------------------------------------------------------------------------------------------

def test_dataset_provider_builds_blend_and_fixed_validation(parse, corpus, process_group):
    from regmix_plugin.megatron.datasets import DatasetsProvider, MixtureSource

    mix = write_mixture(corpus, "mega", {"web": 0.5, "code": 0.5})  # books: weight 0, still validated
    args = parse([*MODEL_FLAGS, "--train-iters", "10", "--data-mixture-from", str(mix),
                  "--regmix-valid-samples-per-domain", "5", "--data-cache-path", str(corpus / "cache")])
    train, valid, test = DatasetsProvider(MixtureSource.from_args(args))([40, None, None])
    assert len(train) == 40 and test is None
    assert {train[i]["dataset_id"] for i in range(40)} == {0, 1}
    assert valid.samples == 15 and valid.period == 16 and args.eval_iters == 4  # 15 samples + 1 padding, batch 4
    assert [valid[i]["dataset_id"] for i in range(15)] == [0] * 5 + [1] * 5 + [2] * 5
    assert valid[15]["loss_mask"].sum() == 0 and valid[16]["tokens"].equal(valid[0]["tokens"])  # padding, then again
    assert valid[0]["tokens"].shape == (32,) and valid[0]["labels"].shape == (32,)


def test_tokenizer_mismatch_with_the_corpus_is_refused(parse, corpus, process_group):
    from regmix_plugin.data.tokenizer import TokenizerMismatchError
    from regmix_plugin.megatron.datasets import DatasetsProvider, MixtureSource

    flags = [f if f != "257" else "300" for f in MODEL_FLAGS]
    args = parse([*flags, "--train-iters", "10", "--data-mixture-from", str(corpus / "natural.json")])
    with pytest.raises(TokenizerMismatchError, match="does not match the corpus tokenizer"):
        DatasetsProvider(MixtureSource.from_args(args))([8, None, None])


@pytest.mark.parametrize("samples, mbs, dp, microbatches", [(33, 4, 1, 8), (33, 2, 2, 1), (7, 1, 4, 2), (40, 4, 2, 1)])
def test_each_evaluation_reads_every_validation_sample_once(parse, samples, mbs, dp, microbatches):
    """Megatron's stock sampler over the fixed set: every sample once per evaluation, on every layout.

    The old path handed Megatron a ConcatDataset: eval_iters became the sample count (33 samples, mbs 4, gbs 32:
    264 micro-batches where 9 suffice) and the tail past the last whole micro-batch x DP was never read.
    """
    from megatron.training.datasets.data_samplers import MegatronPretrainingSampler

    from regmix_plugin.megatron.validation import FixedValidationSet

    parts = [torch.utils.data.TensorDataset(torch.arange(n)) for n in (samples // 3, samples // 3, samples - 2 * (samples // 3))]
    batch = mbs * dp * microbatches
    fixed = FixedValidationSet(parts, batch=batch)
    assert fixed.batches == -(-samples // batch) and fixed.period - samples < batch
    read = []
    for evaluation in range(3):
        consumed = evaluation * fixed.period + (batch if evaluation == 2 else 0)  # the third starts off a period
        seen = []
        for rank in range(dp):
            sampler = MegatronPretrainingSampler(len(fixed), consumed, mbs, rank, dp)
            it = iter(sampler)
            for _ in range(fixed.batches * microbatches):
                seen += next(it)
        read.append(sorted(j % fixed.period for j in seen))
    assert read[0] == list(range(fixed.period))  # every sample once, padding included
    assert read[1] == read[0] and read[2] == read[0]


def test_a_padded_first_sample_does_not_corrupt_later_loss_masks(corpus):
    """megatron-core 0.19's GPTDataset zeroes its cached loss mask in place when the first sample it serves in
    a process is the padded last one; every later sample then lost those positions (per data-loader worker)."""
    from regmix_plugin.data.blend import BlendConfig, build_datasets
    from regmix_plugin.mixture import Mixture

    ds = build_datasets(Mixture.load(corpus / "natural.json"), BlendConfig(seq_length=32, train_samples=8)).valid["books"]
    masks = [int(ds[i]["loss_mask"].sum()) for i in range(len(ds))]
    padded = masks.index(min(masks))
    assert min(masks) < 32 and masks.count(32) == len(masks) - 1  # exactly one partial sequence
    fresh = build_datasets(Mixture.load(corpus / "natural.json"), BlendConfig(seq_length=32, train_samples=8)).valid["books"]
    order = [padded] + [i for i in range(len(fresh)) if i != padded]
    assert [int(fresh[i]["loss_mask"].sum()) for i in order] == [masks[i] for i in order]


# ---- the loss -------------------------------------------------------------------------------------------

def test_domain_tally_gives_exact_domain_means():
    """Tallies summed over micro batches and DP ranks (as the hook does) give the exact token-weighted means."""
    g = torch.Generator().manual_seed(0)
    names = ["web", "code", "books"]
    losses = torch.rand(8, 16, generator=g) * 5  # per-token losses of 8 sequences
    mask = (torch.rand(8, 16, generator=g) > 0.2).float()
    ids = torch.tensor([0, 1, 0, 0, 1, 1, 0, 1])  # books absent
    tallies = [DomainTally(names) for _ in range(2)]  # 2 DP ranks x 2 micro batches of 2 sequences
    for rank, tally in enumerate(tallies):
        tally.begin_evaluation()
        for mb in range(2):
            sl = slice(rank * 4 + mb * 2, rank * 4 + mb * 2 + 2)
            loss, num_tokens, report = per_domain_loss(mask[sl], ids[sl], losses[sl], tally, evaluating=True)
            assert loss.item() == pytest.approx((losses[sl] * mask[sl]).sum().item(), rel=1e-6)
            assert num_tokens.item() == int(mask[sl].sum().item())
            assert list(report) == ["lm loss"]  # Megatron's report stays its own: one key, one collective
    total_loss = sum(t.loss for t in tallies)
    total_tokens = sum(t.tokens for t in tallies)
    for k in range(3):
        sel = ids == k
        if sel.any():
            direct = (losses[sel] * mask[sel]).sum() / mask[sel].sum()
            assert (total_loss[k] / total_tokens[k]).item() == pytest.approx(direct.item(), rel=1e-6)
        else:
            assert total_tokens[k].item() == 0
    # Training micro batches count samples per domain and leave the evaluation sums alone.
    tally = DomainTally(names)
    per_domain_loss(mask, ids, losses, tally, evaluating=False)
    assert tally.samples.tolist() == [4, 4, 0] and tally.tokens.sum().item() == 0


# Tensor reads that make the host wait for the device (on a GPU), as torch names them.
HOST_READS = {"item", "__int__", "__float__", "__bool__", "__index__", "tolist", "numpy", "nonzero", "cpu"}


@pytest.mark.parametrize("evaluating", [False, True], ids=["training", "evaluation"])
def test_a_micro_batch_reads_nothing_back_from_the_device(evaluating, parse, process_group, monkeypatch):
    """Issue 23 point 7: get_batch read the micro-batch size back with .item() on every micro-batch (a GPU->CPU
    sync that stock get_batch does not make, and that CUDA-graph capture forbids). Every tensor op of the plugin's
    batch and loss path is recorded; none may read a value back to the host."""
    from torch.overrides import TorchFunctionMode

    from regmix_plugin.megatron.loss import get_batch, loss_func

    args = parse([*MODEL_FLAGS, "--train-iters", "4", "--eval-micro-batch-size", "1"])
    args.check_for_nan_in_loss_and_grad = False  # Megatron's own NaN check reads the loss, as in its pretrain_gpt
    monkeypatch.setattr(torch.cuda, "current_device", lambda: "cpu")  # the device stands in on the CPU
    b = args.eval_micro_batch_size if evaluating else args.micro_batch_size
    item = {"tokens": torch.randint(0, 257, (b, 32)), "labels": torch.randint(0, 257, (b, 32)),
            "loss_mask": torch.ones(b, 32), "position_ids": torch.arange(32).repeat(b, 1),
            "attention_mask": torch.ones(b, 1, 32, 32, dtype=torch.bool), "dataset_id": torch.tensor([2, 0][:b])}
    tally = DomainTally(["web", "code", "books"])
    tally.begin_evaluation()
    reads: list[str] = []

    class Record(TorchFunctionMode):
        def __torch_function__(self, func, types, a=(), kw=None):
            if getattr(func, "__name__", "") in HOST_READS:
                reads.append(func.__name__)
            return func(*a, **(kw or {}))

    class Model(torch.nn.Module):
        pass

    model = Model().train(not evaluating)
    with Record():
        batch, dataset_id = get_batch(iter([item]), None, evaluating)
        loss = loss_func(batch["loss_mask"], dataset_id, tally, torch.rand(b, 32), model=model)
    assert reads == []
    assert dataset_id.tolist() == [2, 0][:b] and loss[0].dim() == 0
    counted = tally.tokens if evaluating else tally.samples
    assert counted.tolist() == ([0.0, 0.0, 32.0] if evaluating else [1.0, 0.0, 1.0])  # id 2: books
    with pytest.raises(RuntimeError, match="a micro-batch of 3 samples where Megatron's sampler gives"):
        get_batch(iter([dict(item, dataset_id=torch.tensor([0, 1, 2]))]), None, evaluating)


def test_forward_step_returns_the_schedule_plan_when_asked(monkeypatch):
    """The combined 1F1B schedule (--overlap-moe-expert-parallel-comm) calls forward_step(..., True)."""
    import megatron.training

    from regmix_plugin.megatron import loss as loss_mod

    class Model:
        vp_stage = None
        training = True

        def build_schedule_plan(self, tokens, position_ids, attention_mask, labels=None, loss_mask=None):
            return ("plan", tokens, labels)

        def __call__(self, *a, **kw):
            raise AssertionError("the model must not run forward when a schedule plan is asked for")

    class Timer:
        def start(self):
            pass

        def stop(self):
            pass

    batch = {"tokens": torch.ones(1, 4), "labels": torch.zeros(1, 4), "loss_mask": torch.ones(1, 4)}
    monkeypatch.setattr(loss_mod, "get_batch", lambda it, vp_stage=None, evaluating=False: (batch, torch.zeros(1, dtype=torch.long)))
    monkeypatch.setattr(megatron.training, "get_timers", lambda: (lambda *a, **k: Timer()))
    plan, loss = loss_mod.make_forward_step(None)(iter([]), Model(), return_schedule_plan=True)
    assert plan[0] == "plan" and plan[1] is batch["tokens"] and plan[2] is batch["labels"] and callable(loss)


# ---- the documented launch lines ------------------------------------------------------------------------

_PARSE_ONLY = """
import sys
import megatron.training.arguments as margs
margs.get_device_arch_version = lambda: 9  # the one GPU fact validation reads (Hopper); no GPU here
from regmix_plugin.megatron.args import add_regmix_args, check_regmix_args
from regmix_plugin.megatron.launch import prepare_launch
sys.argv = [sys.argv[0], *prepare_launch(sys.argv[1:]).argv]
a = margs.parse_and_validate_args(extra_args_provider=add_regmix_args)
check_regmix_args(a)
print("PARSED", a.tensor_model_parallel_size, a.pipeline_model_parallel_size, a.transformer_impl, a.data_mixture_from)
"""


def test_example_tp2_pp2_arguments_pass_megatron_validation(corpus, tmp_path):
    """The example's exact command line, through the real parser and validation as 4 ranks would see it."""
    fake = tmp_path / "python"
    (tmp_path / "parse_only.py").write_text(_PARSE_ONLY)
    # Stands in for python: drops "-m torch.distributed.run --standalone --nproc-per-node N -m <module>".
    fake.write_text(f"#!/usr/bin/env bash\nshift 7\nexec {sys.executable} {tmp_path / 'parse_only.py'} \"$@\"\n")
    fake.chmod(0o755)
    env = dict(os.environ, PYTHON=str(fake), MIXTURE=str(corpus / "natural.json"), OUT=str(tmp_path / "out"),
               WORLD_SIZE="4", RANK="0", PYTHONWARNINGS="ignore")
    proc = subprocess.run(["bash", str(REPO / "examples" / "megatron_tp2_pp2.sh")], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"PARSED 2 2 local {corpus / 'natural.json'}" in proc.stdout


def test_bad_flags_are_one_line_errors_from_the_entry_point(corpus):
    proc = subprocess.run([sys.executable, "-m", "regmix_plugin.megatron.pretrain_gpt", *MODEL_FLAGS,
                           "--train-iters", "4", "--data-mixture-from", str(corpus / "natural.json"), "--mock-data"],
                          capture_output=True, text=True, cwd=REPO, timeout=300,
                          env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("regmix: error:")]
    assert errors == ["regmix: error: --mock-data: not allowed with --data-mixture-from; drop one of them"]
    assert "Traceback" not in proc.stderr


@pytest.mark.gpu
def test_pretrain_gpt_runs_on_gpu(corpus, tmp_path):
    """The entry point end to end on one GPU (skipped without CUDA); scripts/gpu_check.sh checks more."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1",
           "-m", "regmix_plugin.megatron.pretrain_gpt", *MODEL_FLAGS, "--train-iters", "4", "--eval-interval", "2",
           "--data-mixture-from", str(corpus / "natural.json"), "--regmix-valid-samples-per-domain", "4",
           "--save", str(tmp_path / "ckpt"), "--save-interval", "2", "--bf16"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from regmix_plugin.metrics import read_metrics

    recs = read_metrics(tmp_path / "ckpt" / "metrics.jsonl")
    assert [r["step"] for r in recs] == [2, 4] and all(f"valid/{d}/loss" in recs[-1] for d in ("web", "code", "books"))


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 4, reason="TP=2/PP=2 needs 4 GPUs")
def test_example_tp2_pp2_launch(corpus, tmp_path):
    env = dict(os.environ, MIXTURE=str(corpus / "natural.json"), OUT=str(tmp_path), TRAIN_SAMPLES="64")
    proc = subprocess.run(["bash", str(REPO / "examples" / "megatron_tp2_pp2.sh")], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "metrics.jsonl").is_file()



def test_a_missing_eval_interval_is_a_one_line_error(parse, corpus):
    args = parse([*MODEL_FLAGS[2:], "--train-iters", "10", "--data-mixture-from", str(corpus / "natural.json")])
    with pytest.raises(ConfigError, match="--eval-interval: missing"):
        check_regmix_args(args)


def test_ranks_that_do_not_read_data_build_nothing(corpus, process_group):
    """As Megatron-LM's pretrain_gpt.py: only TP rank 0 of the first and last pipeline stages builds datasets."""
    from regmix_plugin.data.blend import BlendConfig, build_datasets
    from regmix_plugin.mixture import Mixture

    ds = build_datasets(Mixture.load(corpus / "natural.json"),
                        BlendConfig(seq_length=32, train_samples=8, build_on_this_rank=False))
    assert ds.train is None and ds.valid == {"web": None, "code": None, "books": None}


def test_multi_token_prediction_stages_get_their_batch(parse, process_group):
    """MTP layers sit on the last pipeline stage and need the input tokens there (no longer hard-coded off)."""
    from regmix_plugin.megatron.loss import _mtp_on_this_rank

    args = parse([*MODEL_FLAGS, "--train-iters", "4", "--position-embedding-type", "rope", "--mtp-num-layers", "1"])
    assert _mtp_on_this_rank(args, None)  # one stage: it is the last
    assert not _mtp_on_this_rank(parse([*MODEL_FLAGS, "--train-iters", "4"]), None)
