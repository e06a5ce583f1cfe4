#!/usr/bin/env bash
# Installs the system tools omni_img calls, where they are missing.
#
#   bash launch/system_tools.sh           what the main job needs (Tesseract OCR)
#   bash launch/system_tools.sh --tests   that, plus what the test suite needs (shellcheck;
#                                          Chromium and its driver for the web page's test)
#
# Debian/Ubuntu: apt-get, as root or through sudo. macOS: Homebrew. Elsewhere it names
# what to install and fails, so that a chained command stops before any work starts.
set -euo pipefail

tools=(tesseract)
if [ "${1:-}" = "--tests" ]; then
  tools+=(shellcheck chromium chromedriver)
elif [ -n "${1:-}" ]; then
  echo "usage: bash launch/system_tools.sh [--tests]" >&2
  exit 2
fi

debian_packages() {
  case "$1" in
    tesseract) echo "tesseract-ocr tesseract-ocr-eng" ;;
    chromedriver) echo "chromium-driver" ;;
    *) echo "$1" ;;
  esac
}

missing=()
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(uname -s)" = Darwin ] && command -v brew >/dev/null 2>&1; then
  echo "installing ${missing[*]} (brew)"
  brew install "${missing[@]}"
  exit 0
fi

packages=""
for tool in "${missing[@]}"; do packages="$packages $(debian_packages "$tool")"; done
if ! command -v apt-get >/dev/null 2>&1; then
  echo "missing:${packages}; install them with your system's package manager" >&2
  exit 1
fi
if [ "$(id -u)" = 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "missing:${packages}; run as root: apt-get install${packages}" >&2
  exit 1
fi
echo "installing${packages} (apt)"
"${sudo[@]}" apt-get update -qq
# shellcheck disable=SC2086  # the package list is meant to split
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq $packages >/dev/null
