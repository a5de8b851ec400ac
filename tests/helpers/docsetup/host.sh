# The sandboxed host every docs page starts from (tests/helpers/docsnippets.py): settings at the
# default path, the example desired state with a throwaway identity, ROOT, one pass applied, and
# a fleet repository. Runs inside the sandbox, as root; $REPO is the repository's copy.
set -euo pipefail
python=$REPO/.venv/bin/python
mkdir -p /etc/reconciler /srv/gitops /opt/gateway/data /opt/gateway/nginx
cp -r "$REPO/desired-state" /srv/gitops/gateway
rm -rf /srv/gitops/gateway/tls
"$python" -m reconciler.support.devpki /srv/gitops/gateway/tls
cat > /etc/reconciler/reconciler.toml <<TOML
# /etc/reconciler/reconciler.toml of the docs' sandbox host
state_dir = "/srv/gitops/gateway"
root = "/opt/gateway"
TOML
reconciler apply

# A fleet repository as git-sync leaves it: /srv/git/current, a commit, two gateways.
fleet=/srv/git/current
mkdir -p "$fleet/common" "$fleet/gateways"
printf 'shared = ["common"]\n' > "$fleet/fleet.toml"
cp -r /srv/gitops/gateway/trust /srv/gitops/gateway/profiles "$fleet/common/"
grep -v '^\[identity\]\|^cert\|^key' /srv/gitops/gateway/gateway.toml > "$fleet/common/gateway.toml"
for gateway in mx1 mx2; do
  mkdir -p "$fleet/gateways/$gateway"
  printf '[identity]\ncert = "tls/cert.pem"\nkey = "tls/key.pem"\n' > "$fleet/gateways/$gateway/gateway.toml"
  "$python" -m reconciler.support.devpki "$fleet/gateways/$gateway/tls"
done
git -C "$fleet" init -q -b main
git -C "$fleet" add -A
git -C "$fleet" -c user.name=docs -c user.email=docs@example.org commit -q -m fleet
