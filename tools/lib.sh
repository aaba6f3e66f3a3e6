# shellcheck shell=bash
# Shared by the tools/ scripts: repository paths and the project's venv on PATH.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
COLLECTIONS_DIR="$ROOT/.build/collections"
export PATH="$VENV/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$COLLECTIONS_DIR"

# Make the working tree importable as ansible_collections.mpanel.cloudpods
# without copying it: playbooks, modules and unit tests all run the code as it is.
link_collection() {
  mkdir -p "$COLLECTIONS_DIR/ansible_collections/mpanel"
  ln -sfn ../../../.. "$COLLECTIONS_DIR/ansible_collections/mpanel/cloudpods"
}

log() { printf '\n== %s\n' "$*"; }
