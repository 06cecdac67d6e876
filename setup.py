"""Install script for regmix_plugin (tool configuration lives in pyproject.toml)."""

from setuptools import find_packages, setup

setup(
    name="regmix_plugin",
    version="0.1.0",
    description="Regression-based data-mixture selection (RegMix, Data Mixing Laws) for Megatron pretraining",
    python_requires=">=3.12",
    packages=find_packages(include=["regmix_plugin", "regmix_plugin.*"]),
    package_data={"regmix_plugin": ["py.typed"]},
    install_requires=[
        # megatron-core 0.17+ needs Python >= 3.12; 0.19.x is the tested line.
        "megatron-core>=0.19,<0.20",
        "torch",
        "numpy",
        "scipy",
        "lightgbm",
        "scikit-learn",
        "pyyaml",
        "pandas",
        "tqdm",
        "matplotlib",
        "tensorboard",
        "tokenizers",
        # megatron-core's torch_dist checkpoints (Megatron-LM's default format) start writer workers with
        # psutil, which megatron-core does not declare: without it every --save fails.
        "psutil",
        # the one validation layer for user-written files (regmix_plugin/config_schema.py, DECISIONS 48)
        "pydantic>=2.7,<3",
    ],
    extras_require={
        # apex is deliberately absent: it is not on PyPI. megatron-core uses it when it is
        # installed from source on a GPU machine, and works without it.
        "dali": ["nvidia-dali-cuda120"],
        "wandb": ["wandb"],
        "parquet": ["pyarrow"],
        # hydra-core: the tests read the Bridge export's override with Hydra's own parser, as Bridge does.
        "dev": ["pytest", "hypothesis", "pyarrow", "hydra-core>=1.3"],
    },
    entry_points={"console_scripts": ["regmix=regmix_plugin.cli:main"]},
)
