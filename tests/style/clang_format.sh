#!/usr/bin/env bash
# The C, CUDA and header files follow .clang-format (issue 17): clang-format --dry-run --Werror over every
# tracked source file. clang-format comes from scripts/install-deps.sh (Debian 12: version 14); another
# major version may lay out a few constructs differently, so the test names the version it ran.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
if ! command -v clang-format >/dev/null 2>&1; then
  echo "clang-format is not installed (scripts/install-deps.sh installs it): skipped"; exit 77
fi
echo "$(clang-format --version)"
mapfile -t files < <(git ls-files 'src/*.c' 'src/*.h' 'src/*.cu' 'tests/*.c' 'tests/*.h' 'tests/*.cu' 'bench/*.c' 2>/dev/null)
if [ "${#files[@]}" -eq 0 ]; then
  # not a git checkout (an unpacked archive): every such file under the tree
  mapfile -t files < <(find src tests bench \( -name '*.c' -o -name '*.h' -o -name '*.cu' \) -not -path '*/node_modules/*' | sort)
fi
bad=0
for f in "${files[@]}"; do
  if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
    echo "not formatted: $f (run: clang-format -i $f)"; bad=$((bad + 1))
  fi
done
echo "${#files[@]} files checked, $bad not formatted"
[ "$bad" -eq 0 ]
