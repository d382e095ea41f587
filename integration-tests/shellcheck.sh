#!/usr/bin/env bash
# Runs shellcheck over every shell script in the repository (tracked files ending in .sh, and
# tracked files whose first line runs bash or sh), at severity warning and above, with the
# settings in .shellcheckrc. Exit 0 when clean.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts=()
while IFS= read -r -d '' file; do
    case $file in
        *.sh) scripts+=("$file") ;;
        *) head -n1 "$file" 2>/dev/null | grep -qE '^#!.*\b(bash|sh)\b' && scripts+=("$file") ;;
    esac
done < <(git ls-files -z)
echo "shellcheck $(shellcheck --version | sed -n 's/^version: //p') on ${#scripts[@]} scripts"
shellcheck -S warning "${scripts[@]}"
echo "shellcheck: clean"
