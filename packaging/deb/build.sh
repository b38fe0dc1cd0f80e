#!/bin/sh
# Build the hostmon Debian package with dpkg-deb (no debhelper needed).
#
#   packaging/deb/build.sh [OUTDIR]        (default OUTDIR: ./dist)
#
# The agent goes into its own virtual environment at /opt/hostmon, built with
# Debian's /usr/bin/python3.11 (the interpreter the package depends on) and
# pip from PyPI, pinned by packaging/docker/constraints.txt (the tested
# versions). Compiled wheels (psutil, cryptography, ...) make the package
# architecture-specific: hostmon_<version>_<arch>.deb. Prints the .deb's path.
set -eu

REPO=$(cd "$(dirname "$0")/../.." && pwd)
OUTDIR=${1:-"$REPO/dist"}
PY=${HOSTMON_DEB_PYTHON:-/usr/bin/python3.11}
PKG=hostmon
PREFIX=/opt/hostmon

[ -x "$PY" ] || { echo "build.sh: $PY not found (apt-get install python3.11 python3.11-venv)" >&2; exit 1; }
command -v dpkg-deb >/dev/null || { echo "build.sh: dpkg-deb not found" >&2; exit 1; }

VERSION=$("$PY" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$REPO/pyproject.toml")
ARCH=$(dpkg --print-architecture)
PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

STAGE=$(mktemp -d "${TMPDIR:-/tmp}/hostmon-deb.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT INT TERM
ROOT="$STAGE/root"
VENV="$ROOT$PREFIX"

# 1. The virtual environment, built in the staging tree, then relocated.
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-compile \
    -c "$REPO/packaging/docker/constraints.txt" "$REPO"
"$VENV/bin/python" -m pip check >/dev/null
# Scripts and activate files name the staging path: point them at /opt/hostmon.
grep -rlI -- "$VENV" "$VENV/bin" "$VENV/pyvenv.cfg" | while read -r f; do
    sed -i "s#$VENV#$PREFIX#g" "$f"
done
# Byte-compile with the installed paths in tracebacks; dpkg then owns the
# .pyc files (and removes them), and the read-only /opt under the systemd
# sandbox never needs writing.
find "$VENV" -name __pycache__ -type d -prune -exec rm -rf {} +
"$VENV/bin/python" -m compileall -q -f -j 0 -s "$ROOT" -p / "$VENV/lib" >/dev/null

# 2. The rest of the file system.
install -d "$ROOT/usr/bin" "$ROOT/lib/systemd/system" "$ROOT/usr/lib/sysusers.d" \
    "$ROOT/usr/lib/tmpfiles.d" "$ROOT/etc/hostmon" "$ROOT/usr/share/doc/$PKG" "$ROOT/DEBIAN"
ln -s "$PREFIX/bin/hostmon" "$ROOT/usr/bin/hostmon"
install -m 0644 "$REPO/systemd/hostmon.service" "$REPO/systemd/hostmon-ingest.service" "$ROOT/lib/systemd/system/"
install -m 0644 "$REPO/systemd/sysusers.d/hostmon.conf" "$ROOT/usr/lib/sysusers.d/hostmon.conf"
install -m 0644 "$REPO/systemd/tmpfiles.d/hostmon.conf" "$ROOT/usr/lib/tmpfiles.d/hostmon.conf"
# The default config: every key at its default, with its help (the operator edits it).
"$VENV/bin/python" -c 'import sys; from hostmond.cli import main; sys.exit(main(["config", "sample"]))' \
    > "$ROOT/etc/hostmon/hostmon.toml"
# TLS for /metrics: the commented cert_file/key_file name the directory the
# package creates for them (tmpfiles.d: /etc/hostmon/tls, root:hostmon 0750).
sed -i -e '/^\[web\.tls_server_config\]$/,/^$/{
s|^# cert_file =$|# cert_file = "/etc/hostmon/tls/tls.crt"|
s|^# key_file =$|# key_file = "/etc/hostmon/tls/tls.key"   # owned by hostmon, mode 0600|
}' "$ROOT/etc/hostmon/hostmon.toml"
[ "$(grep -c '^# \(cert\|key\)_file = "/etc/hostmon/tls/' "$ROOT/etc/hostmon/hostmon.toml")" = 2 ] || {
    echo "build.sh: [web.tls_server_config] in 'hostmon config sample' changed; fix the sed above" >&2; exit 1; }
# Say plainly, at the top, what a host without ingest_url keeps on its disk and how to stop it.
{ cat <<'HEAD'
# LOCAL HISTORY. With no [shipping] ingest_url (the default), this agent runs an embedded
# ingest and keeps its own history in /var/lib/hostmon/ingest/ingest.db: at most
# shipping.local_history_max_bytes (256 MiB: about 22 hours at the defaults, about
# 90 bytes per sample) and at most shipping.local_history_days (30), the oldest deleted
# first. Set ingest_url and ingest_public_key to ship to your central ingest instead, or
# shipping.enabled = false for no shipping and no local history.

HEAD
cat "$ROOT/etc/hostmon/hostmon.toml"; } > "$STAGE/hostmon.toml" && mv "$STAGE/hostmon.toml" "$ROOT/etc/hostmon/hostmon.toml"
chmod 0644 "$ROOT/etc/hostmon/hostmon.toml"
install -m 0644 "$REPO/docs/deployment.md" "$ROOT/usr/share/doc/$PKG/deployment.md"
install -m 0644 "$REPO/packaging/deb/copyright" "$ROOT/usr/share/doc/$PKG/copyright"
install -d "$ROOT/usr/share/doc/$PKG/examples"
install -m 0644 "$REPO"/systemd/examples/*.conf "$ROOT/usr/share/doc/$PKG/examples/"
for f in postinst prerm postrm; do
    install -m 0755 "$REPO/packaging/deb/$f" "$ROOT/DEBIAN/$f"
done
echo /etc/hostmon/hostmon.toml > "$ROOT/DEBIAN/conffiles"

SIZE=$(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)
cat > "$ROOT/DEBIAN/control" <<CONTROL
Package: $PKG
Version: $VERSION
Architecture: $ARCH
Maintainer: hostmon maintainers <hostmon@example.invalid>
Installed-Size: $SIZE
Depends: python$PYVER, procps, init-system-helpers (>= 1.54), adduser
Section: admin
Priority: optional
Homepage: https://example.invalid/hostmon
Description: lightweight per-host monitoring agent
 hostmon collects CPU, memory, disk, network, process and login-failure
 figures, serves them to Prometheus on /metrics with tenant tags, and ships
 encrypted, signed batches to a central ingest. Runs as the unprivileged
 hostmon user under a hardened systemd unit (hostmon.service); the ingest
 unit (hostmon-ingest.service) is installed but not enabled.
CONTROL

mkdir -p "$OUTDIR"
DEB="$OUTDIR/${PKG}_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group -Zgzip -z6 --build "$ROOT" "$DEB" >/dev/null
echo "$DEB"
