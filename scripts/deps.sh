#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, if any are missing.
# Needs root (or sudo) only when something is missing.
set -euo pipefail
pkgs=(python3-django php-cli phpunit socat nghttp2-server nghttp2-client systemd man-db lintian prometheus)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
