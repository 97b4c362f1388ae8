#!/usr/bin/env bash
# Installs the non-Python tools the test suite uses into .tools/ (git-ignored).
# anvil (Foundry's local Ethereum node) ships as a binary inside the npm package
# @foundry-rs/anvil: the package's `bin` entry (.tools/node_modules/.bin/anvil) is a node
# wrapper around the native binary of the platform package it pulls in as an optional
# dependency (.tools/node_modules/@foundry-rs/anvil-<os>-<arch>/bin/anvil). The tests use
# the native binary when it is there. Without npm we say so loudly; the tests that need
# anvil then fail with the same message instead of passing silently.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .tools

anvil_works() {
  local candidate
  for candidate in .tools/node_modules/@foundry-rs/anvil-*/bin/anvil .tools/node_modules/.bin/anvil; do
    if [ -x "$candidate" ] && "$candidate" --version >/dev/null 2>&1; then
      return 0
    fi
  done
  return 1
}

if anvil_works; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "!!! npm is not installed: anvil cannot be installed and the real-chain tests will fail." >&2
  exit 0
fi
[ -f .tools/package.json ] || echo '{"private": true}' > .tools/package.json
# --include=optional: the platform binary is an optional dependency; a global
# "omit=optional" npm setting would otherwise leave only the wrapper behind.
if ! log=$(npm install --prefix .tools --no-audit --no-fund --include=optional \
    @foundry-rs/anvil@1 2>&1); then
  echo "$log" >&2
  echo "!!! npm install @foundry-rs/anvil failed: the real-chain tests will fail." >&2
  exit 0
fi
if ! anvil_works; then
  echo "!!! @foundry-rs/anvil installed but no working anvil binary for $(uname -sm):" \
    "the real-chain tests will fail." >&2
fi
