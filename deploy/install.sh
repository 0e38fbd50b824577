#!/usr/bin/env bash
# Install or remove meshgate as a systemd service.
#
#   sudo deploy/install.sh [path/to/meshgate]   install (binary defaults to bin/meshgate)
#   sudo deploy/install.sh --uninstall          stop, disable and remove (keeps /etc and /var/lib)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

if [[ ${1:-} == --uninstall ]]; then
  systemctl disable --now meshgate.service 2>/dev/null || true
  rm -f /etc/systemd/system/meshgate.service /usr/local/bin/meshgate
  systemctl daemon-reload
  echo "meshgate removed; /etc/meshgate and /var/lib/meshgate were kept"
  exit 0
fi

bin=${1:-$here/../bin/meshgate}
[[ -x $bin ]] || { echo "no meshgate binary at $bin (run: make build)" >&2; exit 1; }

getent group meshgate >/dev/null || groupadd --system meshgate
getent passwd meshgate >/dev/null || useradd --system --gid meshgate --home-dir /var/lib/meshgate --shell /usr/sbin/nologin meshgate

install -m 0755 "$bin" /usr/local/bin/meshgate
install -d -m 0750 -o root -g meshgate /etc/meshgate /etc/meshgate/resources
[[ -e /etc/meshgate/node.yaml ]] || install -m 0640 -o root -g meshgate "$here/examples/node.yaml" /etc/meshgate/node.yaml
if [[ -z $(ls -A /etc/meshgate/resources) ]]; then
  install -m 0640 -o root -g meshgate "$here/examples/resources/"*.yaml /etc/meshgate/resources/
fi
/usr/local/bin/meshgate validate -f /etc/meshgate/resources
install -m 0644 "$here/meshgate.service" /etc/systemd/system/meshgate.service
systemctl daemon-reload
systemctl enable --now meshgate.service
echo "meshgate installed: systemctl status meshgate; edit /etc/meshgate and run systemctl reload meshgate"
