#!/bin/bash
# Installs, upgrades or removes reconciler as a systemd service (run as root).
#
#   install.sh WHEEL [--wheelhouse DIR]   install, or upgrade in place (idempotent)
#   install.sh --uninstall                remove what install.sh installed
#
# Installs: a virtualenv in /opt/reconciler/venv with WHEEL and its dependencies at the versions
# and hashes of the lock (requirements.txt: DIR's when --wheelhouse is given, and then nothing is
# downloaded; else the one beside this script, from the package index), the example hooks in /opt/reconciler/hooks/
# (executable), the unit in /etc/systemd/system/reconciler.service, /etc/reconciler (0700 when
# created; an existing one is never opened further, and loses any access for other users), and
# /etc/reconciler/reconciler.toml from the example only when that file does not exist yet. Then
# daemon-reload and enable; a running daemon is restarted onto the new version, a stopped one is
# left for you to start once the settings are right.
#
# --uninstall stops and disables the unit and removes the unit file and /opt/reconciler. It keeps
# the settings (/etc/reconciler), the state and audit log (/var/lib/reconciler) and any drop-ins
# you wrote (/etc/systemd/system/reconciler.service.d).
#
# Exit 0 done, 1 failed, 64 usage.
set -euo pipefail

PREFIX=/opt/reconciler
UNIT=/etc/systemd/system/reconciler.service
CONFIG_DIR=/etc/reconciler
PYTHON=${PYTHON:-python3}

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }
usage() {
  printf 'usage: install.sh WHEEL [--wheelhouse DIR]\n       install.sh --uninstall\n' >&2
  exit 64
}

uninstall_all() {
  if systemctl cat reconciler.service >/dev/null 2>&1; then
    say "stopping and disabling reconciler.service"
    systemctl disable --now reconciler.service || true
  fi
  rm -f "$UNIT"
  rm -rf "$PREFIX"
  systemctl daemon-reload
  systemctl reset-failed reconciler.service 2>/dev/null || true
  say "removed $UNIT and $PREFIX; kept $CONFIG_DIR, /var/lib/reconciler and any drop-ins"
}

# /etc/reconciler holds the settings and, by default, the desired state (a git checkout leaves its
# tls/key.pem readable, 0644): it is created 0700, an existing one is never opened further, and
# one that others may enter (an earlier install.sh made it 0755) loses the others' access.
ensure_config_dir() {
  if [ ! -d "$CONFIG_DIR" ]; then
    install -d -m 0700 "$CONFIG_DIR"
    return
  fi
  local mode
  mode=$(stat -c %a "$CONFIG_DIR")
  if [ $((8#$mode & 8#007)) -ne 0 ]; then
    chmod o-rwx "$CONFIG_DIR"
    say "closed $CONFIG_DIR to other users (it was $mode): it may hold the desired state's key"
  fi
}

install_wheel() {
  local wheel=$1 wheelhouse=$2
  [ -f "$wheel" ] || die "wheel $wheel: no such file"
  case $wheel in *.whl) ;; *) die "wheel $wheel: not a .whl file" ;; esac
  local index=() lock
  if [ -n "$wheelhouse" ]; then
    [ -d "$wheelhouse" ] || die "wheelhouse $wheelhouse: no such directory"
    index=(--no-index --find-links "$wheelhouse")
    lock="$wheelhouse/requirements.txt"
  else
    lock="$(dirname "$0")/../requirements.txt"
  fi
  [ -f "$lock" ] || die "$lock: no such file (the dependency lock; \`make wheelhouse\` puts it in the wheelhouse)"

  install -d -m 0755 "$PREFIX"
  if [ ! -x "$PREFIX/venv/bin/python" ]; then
    say "creating the virtualenv $PREFIX/venv"
    "$PYTHON" -m venv "$PREFIX/venv" || die "cannot create $PREFIX/venv (is python3-venv installed?)"
  fi
  local pip=("$PREFIX/venv/bin/python" -m pip --disable-pip-version-check --quiet)
  say "installing the locked dependencies ($lock) into $PREFIX/venv"
  "${pip[@]}" install "${index[@]}" --require-hashes --no-deps -r "$lock"
  say "installing $(basename "$wheel") into $PREFIX/venv"
  # --force-reinstall: the same version again (a rebuilt wheel) still replaces the package.
  "${pip[@]}" install "${index[@]}" --force-reinstall --no-deps "$wheel"
  "${pip[@]}" check >/dev/null || die "the installed packages do not fit together: $("${pip[@]}" check)"

  local share
  share=$("$PREFIX/venv/bin/reconciler" --print-share-dir) \
    || die "the installed wheel has no shipped hooks/ and systemd/"
  install -d -m 0755 "$PREFIX/hooks"
  local hook
  for hook in "$share"/hooks/*; do
    install -m 0755 "$hook" "$PREFIX/hooks/"
  done
  install -m 0644 "$share/systemd/reconciler.service" "$UNIT"

  ensure_config_dir
  if [ -e "$CONFIG_DIR/reconciler.toml" ]; then
    say "kept the existing $CONFIG_DIR/reconciler.toml"
  else
    install -m 0600 "$share/systemd/reconciler.toml.example" "$CONFIG_DIR/reconciler.toml"
    say "wrote $CONFIG_DIR/reconciler.toml from the example: edit it, then start the service"
  fi

  systemctl daemon-reload
  systemctl enable reconciler.service
  if systemctl is-active --quiet reconciler.service; then
    say "restarting the running reconciler.service onto $("$PREFIX/venv/bin/reconciler" --version)"
    systemctl restart reconciler.service
  fi
  say "installed $("$PREFIX/venv/bin/reconciler" --version)"
}

[ "$(id -u)" -eq 0 ] || die "run as root"
wheel= wheelhouse= mode=install
while [ $# -gt 0 ]; do
  case $1 in
    --uninstall) mode=uninstall ;;
    --wheelhouse) [ $# -ge 2 ] || usage; wheelhouse=$2; shift ;;
    --wheelhouse=*) wheelhouse=${1#--wheelhouse=} ;;
    -h|--help) usage ;;
    -*) usage ;;
    *) [ -z "$wheel" ] || usage; wheel=$1 ;;
  esac
  shift
done
if [ "$mode" = uninstall ]; then
  [ -z "$wheel" ] && [ -z "$wheelhouse" ] || usage
  uninstall_all
else
  [ -n "$wheel" ] || usage
  install_wheel "$wheel" "$wheelhouse"
fi
