#!/usr/bin/env bash
# Installs Debian's chromium + chromium-driver for the browser tests when missing.
# Playwright's own browser download does not work offline; we point it at this binary.
set -u
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != "0" ]; then
  echo "chromium missing and not root: browser tests will be skipped" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null 2>&1 || true
apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
  || echo "could not install chromium: browser tests will be skipped" >&2
exit 0
