#!/usr/bin/env bash
# Build the Debian package, dist/prometheus-virt-exporter_<version>_all.deb, with debhelper and
# dh-python (Debian's own tools: byte-compiling, ${python3:Depends}, the unit's enable/start scripts
# and conffiles come from them). The build runs in a copy of the committed-or-not tree under
# dist/deb-build/ (git-ignored), so the repository stays clean. Needs, as root on Debian 12:
#   apt-get install debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools \
#     help2man lintian python3-libvirt python3-prometheus-client python3-lxml python3-psutil \
#     python3-yaml python3-bcrypt
# The maintainer field is yours: DEBFULLNAME/DEBEMAIL, else git's user.name/user.email.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' virt_exporter/__init__.py)
[ -n "$VERSION" ] || { echo "build-deb: no __version__ in virt_exporter/__init__.py" >&2; exit 1; }
NAME=${DEBFULLNAME:-$(git config user.name 2>/dev/null || true)}
EMAIL=${DEBEMAIL:-$(git config user.email 2>/dev/null || true)}
[ -n "$NAME" ] && [ -n "$EMAIL" ] || { echo "build-deb: set DEBFULLNAME and DEBEMAIL (the package's maintainer)" >&2; exit 2; }
# Reproducible: the date of the last commit, not of the build.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

BUILD=dist/deb-build
rm -rf "$BUILD"
mkdir -p "$BUILD/src"
# The tracked and new (not ignored) files: what a commit of this tree would hold (an unpacked sdist,
# which has no .git: all of it).
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$BUILD/src"
else
  find . -path ./dist -prune -o -type f -print0 | xargs -0 cp --parents -t "$BUILD/src"
fi
cd "$BUILD/src"
sed -i "s|@MAINTAINER@|$NAME <$EMAIL>|" debian/control
cat > debian/changelog <<CHANGELOG
prometheus-virt-exporter ($VERSION) unstable; urgency=medium

  * virt_exporter $VERSION.

 -- $NAME <$EMAIL>  $(date -R -u -d "@$SOURCE_DATE_EPOCH")
CHANGELOG
# Debian's own interpreter and tools, whatever PATH holds (a pyenv shim would be another Python).
PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage --build=binary --no-sign >../build.log 2>&1 || { tail -40 ../build.log >&2; exit 1; }
cd "$REPO"
DEB=prometheus-virt-exporter_${VERSION}_all.deb
mv "$BUILD/$DEB" dist/
rm -rf "$BUILD"
echo "dist/$DEB"
