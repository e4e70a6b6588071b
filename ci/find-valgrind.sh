#!/usr/bin/env bash
# Sourced by nightly.sh and update-baseline.sh: make valgrind available for the counts tier.
# Sets VALGRIND to its path, installing it with apt-get where that is possible (CI images run
# as root or with password-less sudo); otherwise says what to install and returns 1.

find_valgrind() {
  if [[ -n "${VALGRIND:-}" && -x "${VALGRIND}" ]]; then
    return 0
  fi
  if command -v valgrind > /dev/null 2>&1; then
    VALGRIND="$(command -v valgrind)"
    export VALGRIND
    return 0
  fi
  if command -v apt-get > /dev/null 2>&1; then
    local sudo=()
    if [[ "$(id -u)" != 0 ]]; then
      if command -v sudo > /dev/null 2>&1 && sudo -n true 2> /dev/null; then
        sudo=(sudo -n)
      else
        sudo=(false)
      fi
    fi
    if [[ "${sudo[*]}" != false ]]; then
      echo "counts tier: valgrind not found; installing it with apt-get" >&2
      if "${sudo[@]}" apt-get install -y --no-install-recommends valgrind > /dev/null 2>&1 \
        || { "${sudo[@]}" apt-get update > /dev/null 2>&1 \
             && "${sudo[@]}" apt-get install -y --no-install-recommends valgrind > /dev/null 2>&1; }; then
        VALGRIND="$(command -v valgrind)"
        export VALGRIND
        return 0
      fi
    fi
  fi
  cat >&2 <<'MSG'
counts tier: valgrind is not installed and could not be installed here.
  Install it:  Debian/Ubuntu: sudo apt-get install valgrind
               Fedora/RHEL:   sudo dnf install valgrind
               Alpine:        apk add valgrind
  or point VALGRIND at a valgrind binary, or set COUNTS=0 to run the wall-clock tier alone
  (then a noisy machine can only give "inconclusive" or exit 3).
MSG
  return 1
}
