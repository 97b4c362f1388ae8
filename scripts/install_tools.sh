#!/usr/bin/env bash
# Installs the non-Python tools the test suite uses into .tools/ (git-ignored).
# anvil (Foundry's local Ethereum node) ships as a binary inside the npm package
# @foundry-rs/anvil. Without npm we say so loudly; the tests that need anvil then fail
# with the same message instead of passing silently.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .tools
if [ -x .tools/node_modules/.bin/anvil ]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "!!! npm is not installed: anvil cannot be installed and the real-chain tests will fail." >&2
  exit 0
fi
( cd .tools && [ -f package.json ] || echo '{"private": true}' > package.json )
npm install --prefix .tools --no-audit --no-fund --silent @foundry-rs/anvil@1 >/dev/null 2>&1 \
  || echo "!!! npm install @foundry-rs/anvil failed: the real-chain tests will fail." >&2
