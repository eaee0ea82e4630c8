#!/usr/bin/env bash
# Install the edgefer kiosk service (run as root from the repository root).
set -euo pipefail
id edgefer >/dev/null 2>&1 || useradd --system --groups video --home /opt/edgefer edgefer
mkdir -p /opt/edgefer /etc/edgefer /var/lib/edgefer /var/log/edgefer
cp -r . /opt/edgefer/src
python3 -m venv /opt/edgefer/venv
/opt/edgefer/venv/bin/pip install --upgrade pip
/opt/edgefer/venv/bin/pip install -e '/opt/edgefer/src[kiosk,llm]'  # editable: engines/ stays beside the code
[ -f /etc/edgefer/kiosk.toml ] || cp tools/kiosk.example.toml /etc/edgefer/kiosk.toml
[ -f /etc/edgefer/edgefer.env ] || install -m 600 /dev/null /etc/edgefer/edgefer.env
chown -R edgefer:edgefer /var/lib/edgefer /var/log/edgefer
cp tools/systemd/edgefer-kiosk.service /etc/systemd/system/
systemctl daemon-reload
systemctl enable --now edgefer-kiosk.service
systemctl status --no-pager edgefer-kiosk.service
