#!/usr/bin/env bash
# Local PyKMIP servers and a throwaway PKI for the KMIP client tests.
#
#   ops/kmip.sh start NAME PORT   start (idempotent) a server on 127.0.0.1:PORT, print PORT
#   ops/kmip.sh stop NAME         stop it
#   ops/kmip.sh status NAME       print its port, exit 1 when not running
#   ops/kmip.sh dir               create (idempotently) the PKI and print its folder
#
# PyKMIP 0.11.0 runs from the project's venv (ops/pyenv.sh). The PKI folder holds:
#   ca.pem                 the CA every server and good client certificate chains to
#   server.crt, server.key ECDSA P-256, SAN DNS:localhost + IP:127.0.0.1, serverAuth
#   client.pem             client key + certificate + CA, clientAuth
#   client-encrypted.pem   the same key encrypted (AES-256), password in client-password.txt
#   expired-client.pem     a client certificate that expired in 2020
#   wrong-ca-client.pem    a client certificate from another CA (other-ca.pem)
# Nothing here is a secret worth keeping: it is made for tests and lives in .cache/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${CIPHERTAIL_CACHE:-$ROOT/.cache}"
BASE="$CACHE/kmip"
PKI="$BASE/pki"

cmd="${1:-}"
name="${2:-}"
port="${3:-}"
state="$BASE/server-$name"

# One PKI for every server: built in a scratch folder and renamed into place, under a
# lock, so a concurrent caller never sees half of it.
make_pki() {
  mkdir -p "$BASE"
  exec 9>"$BASE/.pki.lock"
  flock 9
  if [ -f "$PKI/complete" ] \
      && openssl x509 -checkend 86400 -noout -in "$PKI/server.crt" >/dev/null \
      && openssl x509 -checkend 86400 -noout -in "$PKI/client.crt" >/dev/null; then
    exec 9>&-; return 0
  fi
  local t="$BASE/pki.tmp"
  rm -rf "$t" "$PKI.old"
  mkdir -p -m 700 "$t"
  (
    cd "$t"
    umask 077
    ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
    ca() { # NAME SUBJECT
      ec "$1.key"
      openssl req -new -x509 -key "$1.key" -subj "$2" -days 3650 -sha256 -out "$1.pem" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash"
    }
    leaf() { # NAME CN EKU CA [SAN]
      ec "$1.key"
      openssl req -new -key "$1.key" -subj "/O=ciphertail test/CN=$2" -out "$1.csr"
      {
        echo "basicConstraints=CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=$3"
        echo "authorityKeyIdentifier=keyid"
        [ -n "${5:-}" ] && echo "subjectAltName=$5"
      } > "$1.ext"
      openssl x509 -req -in "$1.csr" -CA "$4.pem" -CAkey "$4.key" -CAcreateserial \
        -days 825 -sha256 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    }
    ca ca "/O=ciphertail test/CN=ciphertail test KMIP CA"
    ca other-ca "/O=ciphertail test/CN=ciphertail other CA"
    leaf server localhost serverAuth ca "DNS:localhost,IP:127.0.0.1"
    leaf client ciphertail-client clientAuth ca
    leaf wrong-ca-client ciphertail-client clientAuth other-ca

    # The expired certificate needs dates in the past, which only `openssl ca` sets.
    mkdir -p expired-ca/new
    : > expired-ca/index.txt
    echo 1000 > expired-ca/serial
    cat > expired-ca/ca.cnf <<EOF
[ca]
default_ca = test
[test]
dir = $t/expired-ca
database = \$dir/index.txt
new_certs_dir = \$dir/new
serial = \$dir/serial
certificate = $t/ca.pem
private_key = $t/ca.key
default_md = sha256
policy = any
unique_subject = no
[any]
commonName = supplied
organizationName = optional
EOF
    ec expired-client.key
    openssl req -new -key expired-client.key -subj "/O=ciphertail test/CN=ciphertail-expired" -out expired-client.csr
    openssl ca -batch -notext -config expired-ca/ca.cnf -in expired-client.csr -out expired-client.crt \
      -startdate 200101000000Z -enddate 200102000000Z -extfile client.ext 2>/dev/null

    # Client files as Percona Server for MongoDB takes them: key, certificate, chain in one PEM.
    cat client.key client.crt ca.pem > client.pem
    cat expired-client.key expired-client.crt ca.pem > expired-client.pem
    cat wrong-ca-client.key wrong-ca-client.crt other-ca.pem > wrong-ca-client.pem
    openssl rand -hex 16 | tr -d '\n' > client-password.txt
    openssl pkey -in client.key -aes256 -passout file:client-password.txt -out client-encrypted.key
    cat client-encrypted.key client.crt ca.pem > client-encrypted.pem

    rm -rf expired-ca ./*.csr ./*.ext ./*.srl client-encrypted.key
    chmod 644 ./*.crt ca.pem other-ca.pem
    touch complete
  )
  [ -d "$PKI" ] && mv "$PKI" "$PKI.old"
  mv "$t" "$PKI"
  rm -rf "$PKI.old"
  exec 9>&- # closing releases the lock, and the server started next must not inherit it
}

running() { [ -f "$state/server.pid" ] && kill -0 "$(cat "$state/server.pid")" 2>/dev/null; }

# Waits until the server completes a TLS handshake with the test client certificate: the
# socket is bound before PyKMIP can serve, so TCP alone says too little.
wait_tls() {
  "$PY" - "$port" "$PKI" "$state/server.pid" <<'PY'
import os, socket, ssl, sys, time
port, pki, pidfile = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(os.path.join(pki, "ca.pem"))
ctx.load_cert_chain(os.path.join(pki, "client.pem"))
pid = int(open(pidfile).read())
deadline = time.time() + 60
while time.time() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("the server exited")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            with ctx.wrap_socket(s, server_hostname="localhost"):
                sys.exit(0)
    except (OSError, ssl.SSLError):
        time.sleep(0.2)
sys.exit("no TLS handshake within 60 s")
PY
}

fail_start() {
  echo "PyKMIP server $name failed to start on port $port:" >&2
  tail -n 20 "$state/stdio.log" >&2 2>/dev/null || true
  tail -n 20 "$state/server.log" >&2 2>/dev/null || true
  if running; then kill "$(cat "$state/server.pid")" 2>/dev/null || true; fi
  exit 1
}

need_name() { [ -n "$name" ] || { echo "usage: $0 $cmd NAME${1:+ PORT}" >&2; exit 2; }; }

case "$cmd" in
  start)
    need_name port
    [ -n "$port" ] || { echo "usage: $0 start NAME PORT" >&2; exit 2; }
    PY="$("$ROOT/ops/pyenv.sh")"
    make_pki
    if running; then cat "$state/port"; exit 0; fi
    # A fresh database each start: the tests create nothing they need to keep.
    rm -rf "$state"
    mkdir -p "$state/policies"
    echo "$port" > "$state/port"
    cat > "$state/server.conf" <<EOF
[server]
hostname=127.0.0.1
port=$port
certificate_path=$PKI/server.crt
key_path=$PKI/server.key
ca_path=$PKI/ca.pem
auth_suite=TLS1.2
policy_path=$state/policies
enable_tls_client_auth=True
logging_level=INFO
database_path=$state/pykmip.db
EOF
    # Detached from our stdio (and our session): a caller reading our output to EOF
    # would otherwise wait for the server to exit.
    setsid "$PY" -c 'from kmip.services.server.server import main; main()' \
      -f "$state/server.conf" -l "$state/server.log" </dev/null >"$state/stdio.log" 2>&1 &
    echo $! > "$state/server.pid"
    wait_tls 2>>"$state/stdio.log" || fail_start
    echo "$port"
    ;;
  stop)
    need_name
    if running; then
      pid="$(cat "$state/server.pid")"
      kill "$pid"
      # PyKMIP joins its session threads (up to 10 s each) before exiting.
      for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$state/server.pid"
    echo "stopped $name" >&2
    ;;
  status)
    need_name
    if running; then cat "$state/port"; else echo "not running: $name" >&2; exit 1; fi
    ;;
  dir)
    make_pki
    echo "$PKI"
    ;;
  *) echo "usage: $0 start NAME PORT | stop NAME | status NAME | dir" >&2; exit 2 ;;
esac
