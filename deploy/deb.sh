#!/usr/bin/env bash
# Builds the Debian package from the locked wheels with Debian's own tools, then lints it.
#
#   deploy/deb.sh [--no-lintian] [VERSION]     (make deb; VERSION defaults to the project's)
#
# dist/wheelhouse (make wheelhouse: the project's wheel, every locked dependency's wheel and the
# lock) and the packaging in deploy/debian/ are copied to build/deb/, a changelog entry for
# VERSION is written, dpkg-buildpackage (debhelper) builds the binary package there without any
# download, and the .deb goes to dist/deb/. lintian then checks it; an error fails the build.
# Needs dpkg-dev, debhelper, python3.11-venv and lintian.
set -euo pipefail
cd "$(dirname "$0")/.."

lint=yes
if [ "${1:-}" = --no-lintian ]; then
  lint=no
  shift
fi
version=${1:-$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)}
[ -n "$version" ] || { echo "deb.sh: no version in pyproject.toml" >&2; exit 1; }
wheelhouse=dist/wheelhouse
if [ ! -f "$wheelhouse/requirements.txt" ]; then
  echo "deb.sh: $wheelhouse has no requirements.txt: run \`make wheelhouse\` first" >&2
  exit 1
fi

stage=build/deb/mailgw-tls-reconciler-$version
rm -rf build/deb
mkdir -p "$stage"
cp -r deploy/debian "$stage/debian"
cp -r "$wheelhouse" "$stage/wheelhouse"
when=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
cat >"$stage/debian/changelog" <<END
mailgw-tls-reconciler ($version) unstable; urgency=medium

  * Built from the project's locked wheels (make deb).

 -- mailgw-tls-reconciler maintainers <reconciler@mailgw.invalid>  $(date -R -u -d "@$when")
END

(cd "$stage" && SOURCE_DATE_EPOCH=$when dpkg-buildpackage --build=binary -us -uc)
mkdir -p dist/deb
deb=$(find build/deb -maxdepth 1 -name "mailgw-tls-reconciler_${version}_*.deb" -print -quit)
[ -n "$deb" ] || { echo "deb.sh: dpkg-buildpackage made no .deb" >&2; exit 1; }
mv "$deb" dist/deb/
deb="dist/deb/${deb##*/}"
echo "deb.sh: built $deb"
if [ "$lint" = yes ]; then
  echo "deb.sh: lintian $deb"
  lintian --info "$deb"
fi
