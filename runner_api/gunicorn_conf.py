"""gunicorn settings for the API (the systemd unit uses them):

    gunicorn -c python:runner_api.gunicorn_conf -b 127.0.0.1:8080 'runner_api.app:create_app()'

The settings are checked once, in gunicorn's master before it binds its address or starts a
worker: a missing or malformed one stops gunicorn with exit status 2 and one message naming each
(as ``cloudpods api`` and ``cloudpods worker`` do), instead of a traceback from every worker.
"""

import sys

from runner_api.settings import Settings, SettingsError

# gunicorn 27's control socket defaults to ~/.gunicorn/gunicorn.ctl, one path for every gunicorn
# of the user: a second API (a test's, a staging one) would take it over. The API does not use it.
control_socket_disable = True  # pylint: disable=invalid-name


def on_starting(_server):
    try:
        Settings.from_env()
    except SettingsError as exc:
        print(f"cloudpods api: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
