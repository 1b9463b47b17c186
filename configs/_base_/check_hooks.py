# mmseg-prompt's checks (mmseg_prompt/engine/), declared once, here. The schedule bases inherit
# this file, so every config built on them has the checks whichever tool runs it (mmseg's stock
# tools see only the config); tools/train.py reads this file too and adds the hooks that a config
# not built on the bases lacks.
default_hooks = dict(
    # the frozen trunk hashes the same after training, a NaN loss stops the run before it is
    # saved, RNG states in checkpoints, and the temporary files of checkpoint saves killed
    # mid-write are removed when a run starts
    trunk_check=dict(type='FrozenTrunkCheckHook'),
    nan_guard=dict(type='NaNLossGuardHook'),
    rng_state=dict(type='RNGStateHook'),
    stale_temps=dict(type='StaleTempCleanupHook'),
    # the heads against the dataset's classes, every label file's header before the first
    # iteration, and each batch's labels against the heads, for runs without tools/train.py's
    # pre-run check (mmseg's stock tools): label_check_hook.py
    label_check=dict(type='SegLabelCheckHook'),
    # on SIGTERM (and the signals added to `signals`, e.g. SIGUSR1 by tools/slurm_train.sh):
    # finish the iteration, save a resumable checkpoint, exit with status 75: stop_signal.py
    stop_signal=dict(type='StopSignalHook'))
