"""gunicorn settings for the API (the systemd unit uses them):

    gunicorn -c python:runner_api.gunicorn_conf -b 127.0.0.1:8080 'runner_api.app:create_app()'

The settings are checked once, in gunicorn's master before it binds its address or starts a
worker: a missing or malformed one stops gunicorn with exit status 2 and one message naming each
(as ``cloudpods api`` and ``cloudpods worker`` do), instead of a traceback from every worker.

Metrics (runner_api/metrics.py): each gunicorn worker counts its own requests; ``/metrics``, which any
one of them answers, must give the totals of all. prometheus_client's multi-process mode does that:
each process writes its values to files in ``PROMETHEUS_MULTIPROC_DIR`` and the scrape sums them.
The master makes a new, empty directory when it starts (never the files of an earlier run, whose
counts would be added again) before any worker imports prometheus_client, tells the library when a
worker is gone, and removes the directory when it exits. A value inherited from the environment is
replaced: that directory may hold another run's (or a provisioning worker's) files.
"""

import os
import shutil
import sys
import tempfile

from runner_api.settings import Settings, SettingsError

# gunicorn 27's control socket defaults to ~/.gunicorn/gunicorn.ctl, one path for every gunicorn
# of the user: a second API (a test's, a staging one) would take it over. The API does not use it.
control_socket_disable = True  # pylint: disable=invalid-name


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # runner_api.metrics.MULTIPROC_ENV; not imported: see on_starting


def on_starting(_server):
    try:
        Settings.from_env()
    except SettingsError as exc:
        print(f"cloudpods api: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    # prometheus_client picks its file-backed values when it is first imported, which must be in the
    # workers, after this (the master never imports it: runner_api.metrics would, hence no import here).
    # --preload loads the app in the master before this hook: every worker would count in a copy of its own.
    if "prometheus_client" in sys.modules:
        print("cloudpods api: the app was loaded before gunicorn_conf.on_starting (--preload?): the metrics of the "
              "worker processes could not be summed; start gunicorn without --preload", file=sys.stderr, flush=True)
        raise SystemExit(2)
    os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="cloudpods-api-metrics-")


def child_exit(_server, worker):
    from prometheus_client import multiprocess  # pylint: disable=import-outside-toplevel
    multiprocess.mark_process_dead(worker.pid)


def on_exit(_server):
    directory = os.environ.pop(MULTIPROC_ENV, None)
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
