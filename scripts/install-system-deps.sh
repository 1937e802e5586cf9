#!/usr/bin/env bash
# Debian packages natkit needs (run as root). Idempotent: only calls apt-get when something
# is missing. With no arguments: everything the test suite and the benchmarks use; with
# arguments: just those packages.
set -euo pipefail
# gcc + python3-dev build the relay's C data plane (relay/server/_dataplane.c); wrk and
# opentracker are the rendezvous benchmark's load generator and reference tracker.
packages=(coturn redis-server iptables nftables conntrack iproute2 gcc openssl python3-venv python3-dev wrk opentracker)
if (($#)); then packages=("$@"); fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# A Python that is not Debian's (pyenv, a container image) brings its own venv module.
if [[ " ${missing[*]} " == *" python3-venv "* ]] && python3 -c 'import venv, ensurepip' 2>/dev/null; then
  missing=("${missing[@]/python3-venv}")
fi
# ... and its own headers.
if [[ " ${missing[*]} " == *" python3-dev "* ]] && python3 -c '
import os, sysconfig, sys
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null; then
  missing=("${missing[@]/python3-dev}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The Debian coturn and redis packages may start system services; the tests start their own
# instances on free ports, so stop these to keep the default ports free.
for svc in coturn redis-server opentracker; do
  [[ " ${packages[*]} " == *" $svc "* ]] || continue
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done
