#!/usr/bin/env bash
# ensure_command.sh COMMAND PACKAGE: install Debian's PACKAGE when COMMAND is not on PATH (needs root and apt).
set -euo pipefail
command=${1:?usage: ensure_command.sh COMMAND PACKAGE}
package=${2:?usage: ensure_command.sh COMMAND PACKAGE}
command -v "$command" >/dev/null 2>&1 && exit 0
echo "installing $package (Debian) for $command"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "$package" >/dev/null
