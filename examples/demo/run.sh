#!/usr/bin/env bash
# Install the plugin with the demo's extras into .venv (first run only) and start the demo host.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -x .venv/bin/flask ] || ! .venv/bin/python -c "import flowpilot_analytics, opentelemetry.sdk, opentelemetry.exporter.prometheus" 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -e ".[demo]"
fi
PORT="${PORT:-5000}"
cat <<EOT
flowpilot_analytics demo on http://127.0.0.1:${PORT}  (SQLite at examples/demo/instance/demo.sqlite)
The plugin's page: http://127.0.0.1:${PORT}/demo/login?user=acme-admin  (sign-in cookie; the users are listed at /)
The queue stat-card in a host page: http://127.0.0.1:${PORT}/demo/queue
Try:
  curl -s -H 'Authorization: Bearer acme-engineer' 'http://127.0.0.1:${PORT}/api/v1/analytics/flowpilot/escalations?period=30d'
  curl -s -H 'Authorization: Bearer acme-team_admin' 'http://127.0.0.1:${PORT}/api/v1/analytics/flowpilot/psa-metrics?period=30d&tz=Europe/Berlin'
  curl -s -H 'Authorization: Bearer acme-viewer' 'http://127.0.0.1:${PORT}/api/v1/analytics/flowpilot/escalations'   # 403
  curl -s -H 'Authorization: Bearer acme-engineer' 'http://127.0.0.1:${PORT}/api/v1/analytics/flowpilot/business-hours'   # acme's calendar
  curl -s -H 'Authorization: Bearer acme-engineer' 'http://127.0.0.1:${PORT}/api/v1/analytics/flowpilot/escalations?period=30d&clock=business'
  curl -s -H 'Authorization: Bearer globex-engineer' 'http://127.0.0.1:${PORT}/api/v1/analytics/flowpilot/escalations?clock=business'   # 409: no business hours
  curl -s -H 'Authorization: Bearer acme-team_admin' 'http://127.0.0.1:${PORT}/api/v1/analytics/flowpilot/escalations/baseline'   # acme's 25 stopwatch samples
  curl -s -H 'Authorization: Bearer acme-team_admin' 'http://127.0.0.1:${PORT}/api/v1/analytics/flowpilot/escalations/savings?period=30d'   # the claim, measured
  curl -s -H 'Authorization: Bearer globex-team_admin' 'http://127.0.0.1:${PORT}/api/v1/analytics/flowpilot/escalations/savings'   # no baseline: why there is no claim
  curl -s -X POST -H 'Authorization: Bearer acme-engineer' 'http://127.0.0.1:${PORT}/demo/sessions/1/push?minutes=30'   # the hook records 2 activities
  .venv/bin/flask --app examples/demo/app.py:create_app flowpilot-analytics ddl   # the plugin tables' DDL
  .venv/bin/flask --app examples/demo/app.py:create_app flowpilot-analytics savings --account 1 --period 30d
Tokens: <acme|globex|initech>-<viewer|engineer|team_admin|admin>
EOT
exec .venv/bin/flask --app examples/demo/app.py:create_app run --port "$PORT" "$@"
