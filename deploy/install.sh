#!/usr/bin/env bash
# Install or remove meshgate as a systemd service from a tarball or a
# source tree (the .deb from `make package` does the same for dpkg).
#
#   sudo deploy/install.sh [path/to/meshgate]   install (binary defaults to bin/meshgate)
#   sudo deploy/install.sh --uninstall          stop, disable and remove (keeps /etc and /var/lib)
#
# Idempotent: a second run changes nothing but the binary and the unit; an
# edited /etc/meshgate/node.yaml and the resources folder are never
# overwritten. MESHGATE_ROOT=DIR installs into DIR instead of / (image
# builds, the package test): the user is made in DIR/etc with the shadow
# tools' --prefix and systemd is neither asked nor started. Without a
# running systemd the unit is enabled by its symlink and not started.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=${MESHGATE_ROOT:-}
unit=$root/etc/systemd/system/meshgate.service
wants=$root/etc/systemd/system/multi-user.target.wants/meshgate.service

systemd_up() { [[ -z $root && -d /run/systemd/system ]]; }

if [[ ${1:-} == --uninstall ]]; then
  if systemd_up; then systemctl disable --now meshgate.service 2>/dev/null || true; fi
  rm -f "$unit" "$wants" "$root/usr/local/bin/meshgate"
  if systemd_up; then systemctl daemon-reload; fi
  echo "meshgate removed; $root/etc/meshgate and $root/var/lib/meshgate were kept"
  exit 0
fi

bin=${1:-$here/../bin/meshgate}
[[ -x $bin ]] || { echo "no meshgate binary at $bin (run: make build)" >&2; exit 1; }

if [[ -n $root ]]; then
  grep -q '^meshgate:' "$root/etc/group" || groupadd --prefix "$root" --system meshgate
  grep -q '^meshgate:' "$root/etc/passwd" ||
    useradd --prefix "$root" --system --gid meshgate --home-dir /var/lib/meshgate --no-create-home --shell /usr/sbin/nologin meshgate
  # chown in DIR takes the root's own ids; this host may not know the names.
  uid=$(awk -F: '$1 == "meshgate" { print $3 }' "$root/etc/passwd")
  gid=$(awk -F: '$1 == "meshgate" { print $3 }' "$root/etc/group")
else
  getent group meshgate >/dev/null || groupadd --system meshgate
  getent passwd meshgate >/dev/null ||
    useradd --system --gid meshgate --home-dir /var/lib/meshgate --no-create-home --shell /usr/sbin/nologin meshgate
  uid=meshgate gid=meshgate
fi

install -d -m 0755 "$root/usr/local/bin" "$root/etc/systemd/system/multi-user.target.wants"
install -m 0755 "$bin" "$root/usr/local/bin/meshgate"
install -d -m 0750 -o 0 -g "$gid" "$root/etc/meshgate" "$root/etc/meshgate/resources"
install -d -m 0750 -o "$uid" -g "$gid" "$root/var/lib/meshgate"
[[ -e $root/etc/meshgate/node.yaml ]] || install -m 0640 -o 0 -g "$gid" "$here/node.yaml" "$root/etc/meshgate/node.yaml"
if [[ -z $(ls -A "$root/etc/meshgate/resources") ]]; then
  install -m 0640 -o 0 -g "$gid" "$here/resources/"*.yaml "$root/etc/meshgate/resources/"
fi
"$root/usr/local/bin/meshgate" validate -f "$root/etc/meshgate/resources"
# The unit names /usr/bin/meshgate (the .deb's path); a tarball install
# lives in /usr/local/bin.
sed 's|/usr/bin/meshgate|/usr/local/bin/meshgate|g' "$here/meshgate.service" > "$unit.tmp"
chmod 0644 "$unit.tmp" && mv "$unit.tmp" "$unit"
ln -sfn /etc/systemd/system/meshgate.service "$wants"
if systemd_up; then
  systemctl daemon-reload
  systemctl enable meshgate.service
  echo "meshgate installed and enabled: edit $root/etc/meshgate/node.yaml, then systemctl restart meshgate"
  systemctl try-restart meshgate.service || true
else
  echo "meshgate installed into ${root:-/} and enabled, not started (no running systemd)"
fi
