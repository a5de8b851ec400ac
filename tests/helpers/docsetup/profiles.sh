# The profiles of docs/server-profiles.md's rendering example, applied: relay (two servers, a
# password) and vault (an API key), their credentials in key_dirs.
set -euo pipefail
state=/srv/gitops/gateway
mkdir -p /run/secrets/relay /run/secrets/vault
printf 'relay-password\n' > /run/secrets/relay/password
printf 'vault-api-key\n' > /run/secrets/vault/api_key
printf 'key_dirs = ["/run/secrets/relay", "/run/secrets/vault"]\n' >> /etc/reconciler/reconciler.toml
sed -i 's/require_tls_outbound = true/require_tls_outbound = false/' "$state/gateway.toml"
rm -f "$state"/profiles/*.toml
cat > "$state/profiles/relay.toml" <<'TOML'
type = "smtp"
servers = ["smtps://relay1.example.com", "smtp://relay2.example.com:587"]
mode = "failover"
transport_encryption = "starttls-required"
password_file = "/run/secrets/relay/password"
TOML
cat > "$state/profiles/vault.toml" <<'TOML'
type = "vault"
url = "https://vault.example.com"
api_key_file = "/run/secrets/vault/api_key"
TOML
reconciler apply
