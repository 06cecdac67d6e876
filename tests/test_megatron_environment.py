"""What a GPU user's environment holds (Transformer Engine, apex, megatron-core), decided by what imports.

No GPU package can be installed here, so fake packages on sys.path stand in for them: a complete-looking TE (a
``__version__`` and ``transformer_engine.pytorch``), the core TE package without its torch extension, TE without
``__version__``, apex with or without its CUDA extensions, an extension that is found but fails to load, and an
old megatron-core. Issue 23, points 3, 5 and 10.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from proxy_helpers import REPO, make_corpus

from regmix_plugin.errors import ConfigError
from regmix_plugin.megatron import environment
from regmix_plugin.megatron.launch import Kernels, prepare_launch

APEX_KERNELS = ("fused_weight_gradient_mlp_cuda", "scaled_masked_softmax_cuda",
                "scaled_upper_triang_masked_softmax_cuda", "scaled_softmax_cuda")
FAKE_NAMES = ("transformer_engine", "apex", *APEX_KERNELS)


def fake_site(root: Path, te: str | None = None, apex: str | None = None, broken_kernel: bool = False) -> Path:
    """A folder of fake packages. te: "ok", "no-pytorch", "no-version"; apex: "full", "python-only"."""
    root.mkdir(parents=True, exist_ok=True)
    if te:
        pkg = root / "transformer_engine"
        pkg.mkdir()
        (pkg / "__init__.py").write_text('' if te == "no-version" else '__version__ = "2.8.0"\n')
        if te != "no-pytorch":
            (pkg / "pytorch").mkdir()
            (pkg / "pytorch" / "__init__.py").write_text("")
    if apex:
        (root / "apex").mkdir()
        (root / "apex" / "__init__.py").write_text("")
        if apex == "full":
            for kernel in APEX_KERNELS:
                (root / f"{kernel}.py").write_text("")
    if broken_kernel:
        # Found by find_spec, fails to load: an extension built against another torch.
        (root / "fused_weight_gradient_mlp_cuda.py").write_text(
            "raise ImportError('undefined symbol: _ZN3c106detail14torchCheckFail')\n")
    return root


@pytest.fixture
def on_path(monkeypatch):
    """Put a fake site first on sys.path; forget the fake modules afterwards (megatron-core must not see them)."""
    def _use(site: Path) -> None:
        monkeypatch.syspath_prepend(str(site))
        importlib.invalidate_caches()

    yield _use
    for name in list(sys.modules):
        if name.split(".")[0] in FAKE_NAMES:
            del sys.modules[name]
    importlib.invalidate_caches()


# (te, apex, broken kernel, the user's flags) -> the flags the entry point adds
COMBINATIONS = {
    "nothing (a plain pip install)": (None, None, False, [],
                                      ["--transformer-impl", "local", "--no-rope-fusion", "--no-gradient-accumulation-fusion",
                                       "--no-masked-softmax-fusion", "--no-persist-layer-norm"]),
    "TE without apex (a pip-installed TE)": ("ok", None, False, [], ["--no-gradient-accumulation-fusion"]),
    "TE and apex (an NGC container)": ("ok", "full", False, [], []),
    "apex without TE": (None, "full", False, [], ["--transformer-impl", "local", "--no-rope-fusion"]),
    "apex without its CUDA extensions": (None, "python-only", False, [],
                                         ["--transformer-impl", "local", "--no-rope-fusion",
                                          "--no-gradient-accumulation-fusion", "--no-masked-softmax-fusion"]),
    "TE and apex, --transformer-impl local": ("ok", "full", False, ["--transformer-impl", "local"], []),
    "TE without apex, --transformer-impl local": ("ok", None, False, ["--transformer-impl", "local"],
                                                  ["--no-gradient-accumulation-fusion", "--no-masked-softmax-fusion",
                                                   "--no-persist-layer-norm"]),
    "TE, apex with a kernel that fails to load": ("ok", "python-only", True, [], ["--no-gradient-accumulation-fusion"]),
}


@pytest.mark.parametrize("case", COMBINATIONS, ids=list(COMBINATIONS))
def test_flags_follow_what_imports(case, tmp_path, on_path):
    te, apex, broken_kernel, given, added = COMBINATIONS[case]
    on_path(fake_site(tmp_path / "site", te=te, apex=apex, broken_kernel=broken_kernel))
    launch = prepare_launch(["--num-layers", "2", *given], environ={})
    assert launch.argv == ["--num-layers", "2", *given, *added]
    assert bool(launch.notes) == bool(added)


def test_the_flags_a_user_gave_are_kept_whatever_is_installed(tmp_path, on_path):
    on_path(fake_site(tmp_path / "site", te="ok"))
    argv = ["--no-gradient-accumulation-fusion", "--num-layers", "2"]
    assert prepare_launch(argv, environ={}).argv == argv


@pytest.mark.parametrize("te, says", [
    ("no-pytorch", r"has no working PyTorch extension \('import transformer_engine.pytorch' fails: ModuleNotFoundError"),
    ("no-version", "has no __version__ \\(megatron-core reads it\\)"),
])
def test_a_broken_transformer_engine_is_refused_in_one_line(te, says, tmp_path, on_path):
    on_path(fake_site(tmp_path / "site", te=te))
    probe = environment.transformer_engine()
    assert probe.state == environment.BROKEN
    with pytest.raises(ConfigError, match=f"Transformer Engine: transformer_engine.* {says}.*install its PyTorch "
                                          "extension .* or uninstall it"):
        prepare_launch(["--num-layers", "2"], environ={})


def test_the_probes_report_what_they_find(tmp_path, on_path):
    import megatron.core

    version, where = environment.megatron_core_version()
    assert ".".join(map(str, version)) == megatron.core.__version__.split("+")[0]
    assert Path(where) == Path(megatron.core.__file__).parent
    assert environment.transformer_engine().state == environment.ABSENT  # nothing installed here
    assert Kernels.detect().modules == frozenset()
    on_path(fake_site(tmp_path / "site", te="ok", apex="full"))
    assert environment.transformer_engine() == environment.Probe(environment.USABLE, "2.8.0")
    assert Kernels.detect().modules == frozenset(("apex", *APEX_KERNELS))


# ---- the entry point, as torchrun starts it: before megatron-core is imported -------------------------------

def _entry_point(tmp_path: Path, site: Path, *flags: str) -> subprocess.CompletedProcess:
    corpus = tmp_path / "corpus"
    make_corpus(corpus, ("web", "code"), docs=8)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(REPO)]), PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "regmix_plugin.megatron.pretrain_gpt", "--num-layers", "2",
                           "--data-mixture-from", str(corpus / "natural.json"), *flags],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)


@pytest.mark.parametrize("te", ["no-pytorch", "no-version"])
def test_the_entry_point_refuses_a_broken_te_before_megatron_fails(te, tmp_path):
    """Today's megatron-core fails to import with these (ModuleNotFoundError in fp8_utils, AttributeError in
    generalized_tensor_parallelism), a deep traceback on every rank; the entry point says why in one line."""
    proc = _entry_point(tmp_path, fake_site(tmp_path / "site", te=te))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1 and errors[0].startswith("regmix: error: Transformer Engine: transformer_engine")


def test_the_entry_point_refuses_an_old_megatron_core(tmp_path):
    """A --no-deps install into an environment with an older megatron-core: one line, not an ImportError."""
    site = tmp_path / "site"
    core = site / "megatron" / "core"
    core.mkdir(parents=True)
    (core / "__init__.py").write_text("")
    (core / "package_info.py").write_text("MAJOR = 0\nMINOR = 13\nPATCH = 1\n")
    proc = _entry_point(tmp_path, site)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("regmix: error: megatron-core: 0.13.1 at ")
    assert "older than 0.19" in proc.stderr


def test_a_newer_megatron_core_is_named_not_refused(monkeypatch):
    monkeypatch.setattr(environment, "megatron_core_version", lambda: ((0, 20, 1), "/x/megatron/core"))
    assert environment.check_megatron_core() == ("megatron-core 0.20.1 is newer than the tested 0.19.x; continuing "
                                                 "(report problems with its version)")
    monkeypatch.setattr(environment, "megatron_core_version", lambda: None)
    with pytest.raises(ConfigError, match="megatron-core: not installed"):
        environment.check_megatron_core()


def test_a_no_deps_install_runs_against_the_installed_megatron_core(tmp_path):
    """Point 10: in an NGC or Megatron-Bridge environment the plugin is installed with --no-deps (setup.py's
    megatron-core pin would replace the container's). Installed so into a folder of its own, the entry point
    runs from there against the megatron-core already installed, and pip installed nothing else."""
    import shutil

    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "pyproject.toml"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "regmix_plugin", src / "regmix_plugin", ignore=shutil.ignore_patterns("__pycache__"))
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(site), str(src)], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name.split("-")[0] for p in site.iterdir() if p.name != "bin") == ["regmix_plugin", "regmix_plugin"]
    env = dict(os.environ, PYTHONPATH=str(site), PYTHONWARNINGS="ignore")
    where = subprocess.run([sys.executable, "-c", "import regmix_plugin, megatron.core as m; "
                            "print(regmix_plugin.__file__); print(m.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    plugin, core = where.stdout.split()
    assert plugin.startswith(str(site)) and not core.startswith(str(tmp_path))
    corpus = tmp_path / "corpus"
    make_corpus(corpus, ("web", "code"), docs=8)
    proc = subprocess.run([sys.executable, "-m", "regmix_plugin.megatron.pretrain_gpt", "--num-layers", "2",
                           "--hidden-size", "64", "--num-attention-heads", "4", "--seq-length", "32",
                           "--max-position-embeddings", "32", "--micro-batch-size", "2", "--global-batch-size", "4",
                           "--train-iters", "4", "--lr", "1e-3", "--eval-interval", "2", "--tokenizer-type",
                           "NullTokenizer", "--vocab-size", "257", "--data-mixture-from", str(corpus / "natural.json"),
                           "--split", "99,1,0"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("regmix: ")] == [
        "regmix: error: --split: not allowed with --data-mixture-from; the train blend uses all of each training "
        "prefix and validation comes from each domain's valid_prefixes in the mixture file; drop the flag"]
