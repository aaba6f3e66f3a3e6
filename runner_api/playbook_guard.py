"""Runs ``ansible-playbook`` so that it cannot outlive the worker that started it.

ansible-runner starts this file (copied into the run's private directory) as its "binary". The
guard asks the kernel for SIGTERM when its parent (the worker) dies, and on that signal (or the
SIGHUP/SIGINT ansible-runner sends on cancel) kills its whole process group: ansible-playbook,
its forks and the modules they run. Otherwise a SIGKILLed worker would leave a playbook running
beside the one the next worker starts after the lease expires. Standard library only.
"""

import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1


def _kill_group(_signum, _frame):
    os.killpg(0, signal.SIGKILL)


def main():
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, _kill_group)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if str(os.getppid()) != os.environ.get("CLOUDPODS_WORKER_PID", str(os.getppid())):
        _kill_group(None, None)  # the worker died before prctl took effect
    binary = os.environ.get("CLOUDPODS_ANSIBLE_PLAYBOOK", "ansible-playbook")
    sys.exit(subprocess.call([binary] + sys.argv[1:]))


if __name__ == "__main__":
    main()
