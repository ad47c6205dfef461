#!/usr/bin/env bash
# Run TPM tests on Debian 13 inside a throwaway container of the lab base image, where tpm2-openssl
# is 1.3 and Python's ssl can serve TLS with a key that stays in the TPM (Debian 12's 1.1 cannot:
# jukics.keystore.provider refuses it, so on a bookworm host those tests take their refusal path).
#
#   scripts/test-tpm-trixie.sh [PYTEST ARGS...]   (default: tests/tpm/test_tpm_terminal_listener.py)
#
# Needs: podman, the image localhost/jukics-base:trixie (scripts/build-base-image.sh), a wheelhouse
# for Python 3.13 (the cs_service role's, under /var/cache/jukics; or WHEELHOUSE=DIR), and apt access
# from the container (swtpm, tpm2-abrmd, tpm2-openssl, python3-tpm2-pytss, pytest from Debian).
# The worktree is mounted read-only; the container is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
wheels=${WHEELHOUSE:-$(ls -dt /var/cache/jukics/wheelhouse-* 2>/dev/null | head -n 1)}
[ -d "$wheels" ] || { echo "test-tpm-trixie: no wheelhouse (set WHEELHOUSE=DIR)" >&2; exit 2; }
[ $# -gt 0 ] || set -- tests/tpm/test_tpm_terminal_listener.py
name=jukics-tpm-trixie-$$
exec podman run --rm --name "$name" -v "$PWD:/src:ro" -v "$wheels:/wheels:ro" localhost/jukics-base:trixie bash -c '
set -e
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends swtpm swtpm-tools tpm2-abrmd libtss2-tcti-tabrmd0 tpm2-openssl \
  tpm2-tools python3-tpm2-pytss dbus python3-pytest openssl >/dev/null
dpkg-query -W tpm2-openssl swtpm tpm2-abrmd python3-tpm2-pytss
python3 -m venv --system-site-packages /venv
# the pinned versions of requirements/app.txt, as on the appliance (not Debian python3-cryptography, too old)
/venv/bin/pip install -q --no-index --find-links /wheels -r /src/requirements/app.txt
cd /src
PATH=/venv/bin:$PATH PYTHONPATH=/src/app exec /venv/bin/python -m pytest -q -p no:cacheprovider -rs --basetemp=/tmp/pt "$@"
' test-tpm-trixie "$@"
