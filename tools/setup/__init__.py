"""The modules of ``tools/setup_env.py`` (checkout-only, like it; not part of the package).

- ``common``: the checkout's paths, the pins read from ``requirements/constraints.txt``, the
  venv settings, running commands and pip;
- ``mmcv_build``: mmcv with its compiled ops (torch header check, wheel cache, source build);
- ``wheelhouse``: making an offline wheelhouse and checking one before it is used.

``tools/setup_env.py`` loads this folder by its path as the package ``mmseg_prompt_setup``, so
it runs from the system interpreter with nothing installed, from any working directory.
"""
