# Source on a GPU machine without package access: unpacks .devdeps/devdeps.tar.xz (made by
# scripts/device-deps.sh) into /tmp/zgpt-deps once and points pkg-config and the loader at it. Where
# the tarball is absent (a machine with the packages installed), it changes nothing.
_zg_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -f "$_zg_root/.devdeps/devdeps.tar.xz" ]; then
  if [ ! -d /tmp/zgpt-deps/usr ]; then
    mkdir -p /tmp/zgpt-deps && tar -C /tmp/zgpt-deps -xJf "$_zg_root/.devdeps/devdeps.tar.xz"
  fi
  export PKG_CONFIG_SYSROOT_DIR=/tmp/zgpt-deps
  export PKG_CONFIG_PATH=/tmp/zgpt-deps/usr/lib/x86_64-linux-gnu/pkgconfig:/tmp/zgpt-deps/usr/lib/x86_64-linux-gnu/openblas-pthread/pkgconfig
  export LD_LIBRARY_PATH=/tmp/zgpt-deps/usr/lib/x86_64-linux-gnu:/tmp/zgpt-deps/usr/lib/x86_64-linux-gnu/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export CPATH=/tmp/zgpt-deps/usr/include:/tmp/zgpt-deps/usr/include/x86_64-linux-gnu/openblas-pthread${CPATH:+:$CPATH}
fi
