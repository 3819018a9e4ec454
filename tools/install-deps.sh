#!/usr/bin/env bash
# Installs the system packages glmtool's build needs when they are missing: cmake (ggml's build)
# and libclang (bindgen, for ggml's bindings). Debian/Ubuntu; uses sudo when not root.
set -euo pipefail
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
# bindgen loads libclang.so / libclang-N.so (libclang-cpp.so, which other packages bring, is not it).
have_libclang=no
for p in /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* \
  /usr/lib/*/libclang.so* /usr/lib/*/libclang-[0-9]*.so*; do
  [ -e "$p" ] && have_libclang=yes
done
[ "$have_libclang" = yes ] || need+=(libclang-dev)
command -v c++ >/dev/null 2>&1 || need+=(g++)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
