"""Loaded by every Python process started with ``PYTHONPATH=tests/megatron_cpu`` (test support only).

With ``REGMIX_TEST_MEGATRON_CPU=1`` it installs the CPU patches before the entry point runs, so
``torchrun ... -m regmix_plugin.megatron.pretrain_gpt`` is launched exactly as on a GPU machine.
"""

import os

if os.environ.get("REGMIX_TEST_MEGATRON_CPU") == "1":
    import cpu_patches

    cpu_patches.apply()
