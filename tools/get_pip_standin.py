"""Stand-in for the get-pip bootstrap script that ansible-test downloads.

ansible-test bootstraps pip in each sanity venv by running a get-pip script
fetched from a host this machine cannot reach. It looks for a cached copy
first; tools/sanity places this file there. It gets pip-install arguments
(``pip==24.2 --no-setuptools --no-wheel ...``). ensurepip must run in a
subprocess: in-process it sets PIP_CONFIG_FILE=/dev/null, which drops the
machine's pip certificate and index settings.
"""
import subprocess
import sys

DROPPED = {"--no-setuptools", "--no-wheel"}


def main():
    args = [arg for arg in sys.argv[1:] if arg not in DROPPED]
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"])
    subprocess.check_call([sys.executable, "-m", "pip", "install"] + args)


if __name__ == "__main__":
    main()
