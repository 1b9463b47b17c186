"""A command in a fresh process, its output kept in a log file: the runner of the tools that drive
other tools (``tools/compare_methods.py``, ``tools/analysis/real_size_run.py``), which stop
with the log's tail when one fails."""
import os
import subprocess
import sys
import time
from typing import Callable, List, NamedTuple, Optional


class LoggedRun(NamedTuple):
    seconds: float  # wall time of the process
    peak_rss_mib: int  # its peak resident memory (wait4's ru_maxrss)


def log_tail(log_path: str, lines: int) -> str:
    """The last ``lines`` lines of a log file."""
    with open(log_path) as f:
        return ''.join(f.readlines()[-lines:])


def run_logged(cmd: List[str], log_path: str, error: Callable[[int], str], *, cwd: str,
               env: Optional[dict] = None,
               echo: Optional[Callable[[str], Optional[str]]] = None,
               tail_lines: int = 30) -> LoggedRun:
    """Run ``cmd`` in ``cwd`` under ``env`` (None: this process's), its stdout and stderr
    written to ``log_path``. With ``echo``, each output line is passed to it as it comes and what
    it returns is printed, indented by four spaces (nothing for None). If the process fails, exit
    with ``error(exit status)`` followed by the log's last ``tail_lines`` lines."""
    started = time.time()
    with open(log_path, 'w') as log:
        if echo is None:
            proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env)
        else:
            proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, env=env)
        try:
            if echo is not None:
                for line in proc.stdout:
                    log.write(line)
                    shown = echo(line)
                    if shown is not None:
                        print('    ' + shown, flush=True)
                proc.stdout.close()
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # as subprocess.call: the process does not outlive an interrupt
            proc.kill()
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(error(proc.returncode) + log_tail(log_path, tail_lines))
    return LoggedRun(time.time() - started, usage.ru_maxrss // 1024)
