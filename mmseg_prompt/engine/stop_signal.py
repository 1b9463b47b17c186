"""A resumable checkpoint when the cluster asks a training run to stop.

Slurm sends SIGTERM some time before it kills a preempted or time-limited job (or, with
``--signal``, a chosen signal earlier: ``tools/slurm_train.sh`` asks for SIGUSR1); without a
handler the run loses everything since its last checkpoint. ``StopSignalHook`` (in
``configs/_base_/check_hooks.py``) turns the signal into a checkpoint and a clean stop
(docs/user_guides/train_test.md, "Stopped by the cluster"):

- the handler only records the signal; after the iteration in progress, every rank learns
  which ranks got one (an all-reduce of one number per rank), so all stop at the same iteration;
- the checkpoint is CheckpointHook's (its file name, ``backend_args``, ``max_keep_ckpts`` and
  ``last_checkpoint``), so ``--resume`` finds it; written through the atomic backend, a save cut
  short leaves the previous checkpoints intact, and further signals during the save are ignored;
- the run ends with exit status ``STOPPED_EXIT_CODE`` (75, EX_TEMPFAIL of sysexits.h: "temporary
  failure, try again"), neither 0 (finished) nor 128 + n (killed by signal n, nothing saved).

A cluster signals every process of the job, DataLoader workers too; torch's workers die on a
SIGTERM that their main process did not send, and the main process then fails at its next batch.
So every process forked while the hook is in charge (the workers) holds the stop signals blocked
and leaves them to a thread that ends the process only on its parent's signal (as torch's own
handler does when the main process shuts its workers down) and ignores the others: the main
process finishes the iteration and shuts the workers down itself.
"""
import logging
import os
import os.path as osp
import signal
import threading
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Set, Union

import torch
from mmengine.dist import all_reduce, get_dist_info
from mmengine.hooks import CheckpointHook, Hook
from mmengine.hooks.hook import DATA_BATCH
from mmengine.logging import print_log
from mmengine.runner import IterBasedTrainLoop
from mmseg.registry import HOOKS

if TYPE_CHECKING:
    from mmengine.runner import Runner

STOPPED_EXIT_CODE = 75  # EX_TEMPFAIL (sysexits.h): stopped with a checkpoint; resume to go on


class TrainingStopped(SystemExit):
    """The end of a run stopped by a signal after its checkpoint: the process exits with
    ``STOPPED_EXIT_CODE``; a caller that runs the Runner itself can catch it."""


def signal_number(name: Union[str, int]) -> signal.Signals:
    """signal.Signals of 'SIGTERM', 'TERM', 'USR1' or a number; ValueError naming the choices."""
    if isinstance(name, int):
        return signal.Signals(name)
    key = str(name).upper()
    key = key if key.startswith('SIG') else f'SIG{key}'
    if key not in signal.Signals.__members__ or key in ('SIGKILL', 'SIGSTOP'):
        raise ValueError(f'StopSignalHook(signals=...): {name!r} is not a signal a process can '
                         f'catch; use e.g. SIGTERM, SIGUSR1, SIGUSR2')
    return signal.Signals[key]


_CHILD_SIGNALS: Set[int] = set()  # the stop signals forked children leave to their parent
_AT_FORK = []  # [True] once _in_forked_child is registered (os.register_at_fork has no undo)


def _in_forked_child() -> None:
    """``os.register_at_fork(after_in_child=...)``: in a child forked while a StopSignalHook is in
    charge, block its signals and wait for them in a thread: the parent's (a DataLoader shutting
    its workers down) ends the child at once, as torch's worker handler does; others are
    ignored."""
    signals = set(_CHILD_SIGNALS)
    if not signals:
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    parent = os.getppid()

    def wait() -> None:
        while True:
            if signal.sigwaitinfo(signals).si_pid == parent:
                os._exit(0)
    threading.Thread(target=wait, name='stop-signal-wait', daemon=True).start()


@HOOKS.register_module()
class StopSignalHook(Hook):
    """On one of ``signals`` while training: finish the iteration, save a resumable checkpoint
    through the CheckpointHook, stop every rank at that iteration and exit with status 75.

    Args:
        signals: signal names or numbers to handle; the default, SIGTERM, is what slurm, torchrun
            and ``kill`` send; ``tools/slurm_train.sh`` adds the one it asks slurm for (SIGUSR1).

    The handlers are installed when the hook is built (the Runner's construction); until
    training starts and after it ends they pass each signal on to the handler that was there
    before (by default: the process ends, as without the hook).
    """

    priority = 'LOWEST'  # after CheckpointHook (VERY_LOW) has saved what it saves this iteration

    def __init__(self, signals: Sequence[Union[str, int]] = ('SIGTERM', )):
        self.signals = [signal_number(s) for s in signals]
        self._pid = os.getpid()
        self._previous: Dict[int, object] = {}
        self._state = 'idle'  # 'armed' while training, 'stopping' once a stop is agreed
        self._received = 0  # the first signal received while armed
        self._stopped_at: Optional[int] = None
        self._checkpoint_hook: Optional[CheckpointHook] = None
        if threading.current_thread() is not threading.main_thread():
            print_log('StopSignalHook: built outside the main thread, so no signal handler is '
                      'installed', logger='current', level=logging.WARNING)
            return
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        # before the Runner forks the training loader's workers (in Runner.train, before any
        # hook is called)
        _CHILD_SIGNALS.update(self.signals)
        if not _AT_FORK:
            os.register_at_fork(after_in_child=_in_forked_child)
            _AT_FORK.append(True)

    # -- the handler: records, ignores or passes on; never logs or saves itself
    def _handle(self, signum, frame) -> None:
        if os.getpid() != self._pid:  # a child, forked before _in_forked_child blocked it
            self._pass_on(signum, frame)
        elif self._state == 'armed':
            self._received = self._received or signum
        elif self._state == 'idle':
            self._pass_on(signum, frame)
        # 'stopping': the checkpoint is being written or the run is ending; nothing to add

    def _pass_on(self, signum, frame) -> None:
        """What the signal would have done without this hook."""
        previous = self._previous.get(signum, signal.SIG_DFL)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:  # SIG_DFL (or unknown): the default action
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def _restore(self) -> None:
        """Put back the handlers that were there, where ours is still the one installed; later
        children take the signals as they come."""
        for sig, previous in self._previous.items():
            if signal.getsignal(sig) == self._handle:
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        _CHILD_SIGNALS.difference_update(self._previous)
        self._previous = {}

    # -- the hook points
    def before_train(self, runner: 'Runner') -> None:
        if not self._previous:
            return
        hooks = [h for h in runner.hooks if isinstance(h, CheckpointHook)]
        problem = ''
        if not isinstance(runner.train_loop, IterBasedTrainLoop):
            problem = f'the train loop is a {type(runner.train_loop).__name__}'
        elif not hooks or hooks[0].by_epoch:
            problem = 'there is no CheckpointHook saving by iteration (default_hooks.checkpoint)'
        if problem:
            print_log(f'StopSignalHook: {problem}, so a stop signal is not turned into a '
                      f'checkpoint', logger='current', level=logging.WARNING)
            self._restore()
            return
        self._checkpoint_hook = hooks[0]
        self._state = 'armed'
        names = ', '.join(s.name for s in self.signals)
        print_log(f'on {names}: the run finishes its iteration, saves a checkpoint and exits '
                  f'with status {STOPPED_EXIT_CODE} (StopSignalHook)', logger='current')

    def _agree(self) -> List[int]:
        """The signal each rank has received (0: none), the same list on every rank."""
        rank, world = get_dist_info()
        received = torch.zeros(world, dtype=torch.int64)
        received[rank] = self._received
        all_reduce(received, op='sum')  # nothing to do without a process group
        return received.tolist()

    def after_train_iter(self, runner: 'Runner', batch_idx: int, data_batch: DATA_BATCH = None,
                         outputs: Optional[dict] = None) -> None:
        if self._state != 'armed':
            return
        received = self._agree()
        if not any(received):
            return
        self._state = 'stopping'
        step = runner.iter + 1
        who = ', '.join(f'{signal.Signals(s).name} on rank {r}'
                        for r, s in enumerate(received) if s)
        if step >= runner.max_iters:
            print_log(f'{who} at the last iteration ({step}): training ends as planned',
                      logger='current', level=logging.WARNING)
            return
        hook = self._checkpoint_hook
        path = hook.file_backend.join_path(hook.out_dir, hook.filename_tmpl.format(step))
        if runner.message_hub.get_info('last_ckpt') != path:  # not saved by its interval
            print_log(f'{who}: saving a checkpoint at iteration {step} and stopping',
                      logger='current', level=logging.WARNING)
            # CheckpointHook has no public save-now method; _save_checkpoint is what its
            # after_train_iter calls: file name, backend_args, max_keep_ckpts, last_checkpoint
            hook._save_checkpoint(runner)
        else:
            print_log(f'{who}: stopping after the checkpoint of iteration {step}',
                      logger='current', level=logging.WARNING)
        runner.train_loop.stop_training = True
        self._stopped_at = step
        print_log(f'stopped at iteration {step} of {runner.max_iters}: {path} saved (named by '
                  f'{osp.join(runner.work_dir, "last_checkpoint")}); the same command with '
                  f'--resume continues from it. Exit status {STOPPED_EXIT_CODE}.',
                  logger='current', level=logging.WARNING)

    def after_run(self, runner: 'Runner') -> None:
        if self._stopped_at is not None:
            # handlers stay: a signal while the process exits changes nothing
            raise TrainingStopped(STOPPED_EXIT_CODE)
        self._state = 'idle'
        self._restore()
