#!/usr/bin/env bash
# Installs the system packages glmtool's build needs when they are missing: cmake (ggml's build)
# and libclang (bindgen, for ggml's bindings). Debian/Ubuntu; uses sudo when not root.
set -euo pipefail
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
{ ls /usr/lib/llvm-*/lib/libclang*.so* || ls /usr/lib/x86_64-linux-gnu/libclang*.so*; } >/dev/null 2>&1 || need+=(libclang-dev)
command -v c++ >/dev/null 2>&1 || need+=(g++)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
