#!/usr/bin/env bash
# Builds the local stand-in for an official slim Debian image, localhost/debian-base:12, from
# Debian's packages (for machines without a container registry): python3, python3-venv,
# ca-certificates and openssl on bookworm, without documentation, manual pages, translations or
# glibc's iconv modules (Python brings its own codecs).
#
# The rootfs tar is cached in RECONCILER_CI_CACHE (default /var/cache/reconciler-ci) and the image
# in buildah's storage, both keyed by the recipe below: each is rebuilt only when missing or when
# the recipe changed (an older tar of this script is then removed).
set -euo pipefail
tag="${1:-localhost/debian-base:12}"
cache="${RECONCILER_CI_CACHE:-/var/cache/reconciler-ci}"

recipe=(
  --variant=apt --include=python3,python3-venv,ca-certificates,openssl
  # merged-usr: usr-is-merged instead of usrmerge, which would pull in perl (50 MB).
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/lib/x86_64-linux-gnu/gconv/*'
  --format=tar bookworm
)
key="$(printf '%s\n' "${recipe[@]}" | sha256sum | cut -c1-12)"
tar="$cache/debian-base-12-$key.tar"

labels="$(buildah inspect --type image --format '{{.OCIv1.Config.Labels}}' "$tag" 2>/dev/null || true)"
if [[ "$labels" == *"reconciler.base-recipe:$key"* ]]; then
  exit 0
fi
if [ ! -s "$tar" ]; then
  mkdir -p "$cache"
  find "$cache" -maxdepth 1 -name 'debian-base-12-*.tar*' -delete
  mmdebstrap "${recipe[@]}" "$tar.partial"
  mv "$tar.partial" "$tar"
fi
ctr="$(buildah from scratch)"
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
buildah add "$ctr" "$tar" / >/dev/null
buildah config --cmd '["/bin/bash"]' --label "reconciler.base-recipe=$key" \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
buildah commit --quiet "$ctr" "$tag" >/dev/null
