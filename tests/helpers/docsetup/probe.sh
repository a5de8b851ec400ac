# docs/server-profiles.md's probe example: relay1.example.com and relay2.example.com are this
# sandbox's loopback (its own /etc/hosts); nothing listens on 465, and 587 is an ESMTP server
# offering STARTTLS with a certificate for relay2.example.com from a CA the desired state trusts.
# Runs after profiles.sh; the server lives as long as the block.
set -euo pipefail
printf '127.0.0.1 relay1.example.com relay2.example.com\n' >> /etc/hosts
"$REPO/.venv/bin/python" - <<'PY' &
import datetime, os, socket, ssl, sys, tempfile
sys.path.insert(0, os.environ["REPO"])
from reconciler.support.devpki import issue, make_ca
ca = make_ca("Relay Test CA")
leaf = issue(ca, "relay2.example.com", sans=("relay2.example.com",))
with open("/srv/gitops/gateway/trust/relay-ca.pem", "wb") as handle:
    handle.write(ca.cert_pem)
folder = tempfile.mkdtemp()
for name, data in (("chain.pem", leaf.cert_pem + ca.cert_pem), ("key.pem", leaf.key_pem)):
    with open(os.path.join(folder, name), "wb") as handle:
        handle.write(data)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(os.path.join(folder, "chain.pem"), os.path.join(folder, "key.pem"))
listener = socket.create_server(("127.0.0.1", 587))
open("/run/docs-probe-ready", "w").close()
while True:
    conn, _ = listener.accept()
    conn.settimeout(10)
    conn.sendall(b"220 relay2.example.com ESMTP\r\n")
    reader = conn.makefile("rb")
    for raw in reader:
        verb = raw.strip().split(b" ")[0].upper()
        if verb == b"EHLO":
            conn.sendall(b"250-relay2.example.com\r\n250 STARTTLS\r\n")
        elif verb == b"STARTTLS":
            conn.sendall(b"220 ready\r\n")
            try:
                context.wrap_socket(conn, server_side=True).close()
            except (OSError, ssl.SSLError):
                pass
            break
        else:
            conn.sendall(b"221 bye\r\n")
            break
    conn.close()
PY
for _ in $(seq 300); do [ -e /run/docs-probe-ready ] && exit 0; sleep 0.1; done
echo "the probe example's server did not start" >&2
exit 1
