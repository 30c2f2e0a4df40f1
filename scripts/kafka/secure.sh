# shellcheck shell=bash
# scripts/kafka/secure.sh: secure mode (start --secure) and its commands.
#
# Sourced by scripts/kafka.sh; not run on its own. For `start --secure`
# (called from cmd_start in cluster.sh): generate_secure_material (a CA,
# the broker's PKCS#12 keystore, the mTLS client certificate and
# admin.properties in SECURE_DIR, with openssl), secure_listener_properties
# (SASL_SSL/SASL_PLAINTEXT/SSL listeners, JAAS, StandardAuthorizer lines of
# server.properties) and write_client_env (SECURE_DIR/client.env).
# Commands: admin-config, client-env, acl (AclCommand as admin), scram-user
# (ConfigCommand as admin), client-cert (a certificate signed by the CA).
# Relies on common.sh (paths incl. SECURE_DIR, ports, load_cluster, log,
# die), fetch.sh (ensure_fetched, run_class), cluster.sh (cmd_bootstrap) and
# the globals cmd_start sets: NODES, SECURE_USERS, ADMIN_PASSWORD; sets
# KEYSTORE_PASSWORD and CLIENT_KEY_PASSWORD itself. Needs openssl.

# A name or password that can go into JAAS config and --add-scram unquoted.
check_credential() {
  [[ "$1" =~ ^[A-Za-z0-9._-]+$ ]] || die "$2 '$1' may only contain A-Z a-z 0-9 . _ -"
}

random_secret() { openssl rand -hex 16; }

# Writes the openssl extension sections used to sign certificates.
write_openssl_ext() {
  cat >"${SECURE_DIR}/openssl-ext.cnf" <<'CNF'
# Extensions for certificates signed by kafka.sh's test CA.
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[broker]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
[client]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
CNF
}

# Signs $1.csr with the CA into $1.pem using extension section $2.
sign_cert() {
  openssl x509 -req -in "$1.csr" -CA "${SECURE_DIR}/ca.pem" -CAkey "${SECURE_DIR}/ca.key" \
    -set_serial "0x$(openssl rand -hex 12)" -days 825 -sha256 \
    -extfile "${SECURE_DIR}/openssl-ext.cnf" -extensions "$2" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr"
}

# Issues a client certificate CN=$1 into SECURE_DIR/$1.pem and $1.key; with a
# password $2 the key is encrypted PKCS#8 (librdkafka: ssl.key.password).
issue_client_cert() {
  local name="$1" password="${2:-}" base="${SECURE_DIR}/$1"
  if [[ -n "${password}" ]]; then
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -aes-256-cbc \
      -pass "pass:${password}" -out "${base}.key" 2>/dev/null
    openssl req -new -key "${base}.key" -passin "pass:${password}" -subj "/CN=${name}" \
      -out "${base}.csr" 2>/dev/null
  else
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "${base}.key" 2>/dev/null
    openssl req -new -key "${base}.key" -subj "/CN=${name}" -out "${base}.csr" 2>/dev/null
  fi
  sign_cert "${base}" client
  chmod 600 "${base}.key"
}

# Generates the CA, the broker's PKCS#12 keystore, the default client
# certificate and the secrets; writes admin.properties.
generate_secure_material() {
  require_cmd openssl "needed to generate TLS certificates"
  mkdir -p "${SECURE_DIR}"
  chmod 700 "${SECURE_DIR}"
  write_openssl_ext
  local d="${SECURE_DIR}"
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "${d}/ca.key" -out "${d}/ca.pem" -days 825 -sha256 -subj "/CN=kstage test CA" \
    -config "${d}/openssl-ext.cnf" -extensions ca 2>/dev/null ||
    die "openssl could not create the CA"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "${d}/broker.key" -subj "/CN=localhost" -out "${d}/broker.csr" 2>/dev/null ||
    die "openssl could not create the broker key"
  sign_cert "${d}/broker" broker || die "openssl could not sign the broker certificate"
  openssl verify -CAfile "${d}/ca.pem" "${d}/broker.pem" >/dev/null ||
    die "the broker certificate does not verify against the CA"
  KEYSTORE_PASSWORD="$(random_secret)"
  openssl pkcs12 -export -in "${d}/broker.pem" -inkey "${d}/broker.key" -certfile "${d}/ca.pem" \
    -name broker -out "${d}/broker.p12" -passout "pass:${KEYSTORE_PASSWORD}" ||
    die "openssl could not write the broker keystore"
  CLIENT_KEY_PASSWORD="$(random_secret)"
  issue_client_cert "${MTLS_CN}" "${CLIENT_KEY_PASSWORD}" ||
    die "openssl could not create the client certificate"
  chmod 600 "${d}"/*.key "${d}/broker.p12"
  cat >"${ADMIN_CONFIG}" <<PROPS
# Java client settings of the admin super user (kafka.sh tool ... --command-config FILE).
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="${ADMIN_PASSWORD}";
ssl.truststore.type=PEM
ssl.truststore.location=${d}/ca.pem
PROPS
  chmod 600 "${ADMIN_CONFIG}"
}

# PLAIN's JAAS line for a listener: the broker's own identity (admin) plus
# every user it accepts.
plain_jaas() {
  local line user
  line="org.apache.kafka.common.security.plain.PlainLoginModule required"
  line+=" username=\"admin\" password=\"${ADMIN_PASSWORD}\" user_admin=\"${ADMIN_PASSWORD}\""
  for user in "${SECURE_USERS[@]}"; do
    line+=" user_${user%%:*}=\"${user#*:}\""
  done
  echo "${line};"
}

# The listener, TLS, SASL and authorizer settings of node $1 in secure mode.
secure_listener_properties() {
  local n="$1" d="${SECURE_DIR}" client controller mtls
  client="CLIENT://127.0.0.1:$(client_port "${n}")"
  controller="CONTROLLER://127.0.0.1:$(controller_port "${n}")"
  mtls="MTLS://127.0.0.1:$(mtls_port "${n}")"
  echo "listeners=${client},${controller},${mtls}"
  echo "advertised.listeners=${client},${controller},${mtls}"
  echo "listener.security.protocol.map=CLIENT:SASL_SSL,CONTROLLER:SASL_PLAINTEXT,MTLS:SSL"
  echo "inter.broker.listener.name=CLIENT"
  echo "sasl.mechanism.inter.broker.protocol=PLAIN"
  echo "sasl.mechanism.controller.protocol=PLAIN"
  echo "listener.name.client.sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN"
  echo "listener.name.client.plain.sasl.jaas.config=$(plain_jaas)"
  echo "listener.name.client.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"
  echo "listener.name.client.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"
  echo "listener.name.controller.sasl.enabled.mechanisms=PLAIN"
  echo "listener.name.controller.plain.sasl.jaas.config=$(plain_jaas)"
  echo "ssl.keystore.type=PKCS12"
  echo "ssl.keystore.location=${d}/broker.p12"
  echo "ssl.keystore.password=${KEYSTORE_PASSWORD}"
  echo "ssl.key.password=${KEYSTORE_PASSWORD}"
  echo "ssl.truststore.type=PEM"
  echo "ssl.truststore.location=${d}/ca.pem"
  echo "listener.name.mtls.ssl.client.auth=required"
  # The certificate's CN is the principal name (User:<CN>).
  # shellcheck disable=SC2016 # $1 is the rule's back-reference, not a shell variable.
  echo 'ssl.principal.mapping.rules=RULE:^CN=([^,]+)(,.*)?$/$1/,DEFAULT'
  echo "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer"
  echo "super.users=User:admin"
  echo "allow.everyone.if.no.acl.found=false"
}

# Writes client.env (see `kafka.sh client-env`) for the cluster at bootstrap $1.
write_client_env() {
  local bootstrap="$1" mtls="" i users="" user
  for ((i = 1; i <= NODES; i++)); do
    mtls+="${mtls:+,}127.0.0.1:$(mtls_port "${i}")"
  done
  for user in "${SECURE_USERS[@]}"; do users+="${users:+ }${user%%:*}"; done
  local d="${SECURE_DIR}"
  {
    echo "# What a client of the secure cluster in ${DATA} needs (written by kafka.sh)."
    echo "BOOTSTRAP=${bootstrap}"
    echo "SECURITY_PROTOCOL=SASL_SSL"
    echo "SASL_MECHANISMS='SCRAM-SHA-256 SCRAM-SHA-512 PLAIN'"
    echo "MTLS_BOOTSTRAP=${mtls}"
    echo "CA_LOCATION=${d}/ca.pem"
    echo "ADMIN_USERNAME=admin"
    echo "ADMIN_PASSWORD=${ADMIN_PASSWORD}"
    echo "ADMIN_CONFIG=${ADMIN_CONFIG}"
    echo "CLIENT_CERTIFICATE_LOCATION=${d}/${MTLS_CN}.pem"
    echo "CLIENT_KEY_LOCATION=${d}/${MTLS_CN}.key"
    echo "CLIENT_KEY_PASSWORD=${CLIENT_KEY_PASSWORD}"
    echo "MTLS_PRINCIPAL=User:${MTLS_CN}"
    echo "USERS='${users}'"
  } >"${SECURE_ENV}"
  chmod 600 "${SECURE_ENV}"
}

# Dies unless the cluster in DATA was started with --secure.
require_secure() {
  load_cluster || die "no cluster in ${DATA} (run: kafka.sh start --secure)"
  ((SECURE == 1)) || die "the cluster in ${DATA} was not started with --secure"
}

cmd_admin_config() {
  require_secure
  echo "${ADMIN_CONFIG}"
}

cmd_client_env() {
  require_secure
  grep -v '^#' "${SECURE_ENV}"
}

cmd_acl() {
  [[ $# -ge 1 ]] || die "usage: kafka.sh acl add|remove|list [ARGS...]"
  local action="$1"
  shift
  require_secure
  local bootstrap
  bootstrap="$(cmd_bootstrap)"
  ensure_fetched
  local args=(--bootstrap-server "${bootstrap}" --command-config "${ADMIN_CONFIG}")
  case "${action}" in
    add) args+=(--add) ;;
    remove) args+=(--remove --force) ;;
    list) args+=(--list) ;;
    *) die "usage: kafka.sh acl add|remove|list [ARGS...]" ;;
  esac
  run_class org.apache.kafka.tools.AclCommand "${args[@]}" "$@"
}

cmd_scram_user() {
  [[ $# -eq 2 ]] || die "usage: kafka.sh scram-user NAME PASSWORD"
  check_credential "$1" "user name"
  check_credential "$2" "password"
  require_secure
  local bootstrap
  bootstrap="$(cmd_bootstrap)"
  ensure_fetched
  # One mechanism per request: the broker refuses to alter a user twice in one.
  local mechanism
  for mechanism in SCRAM-SHA-256 SCRAM-SHA-512; do
    run_class org.apache.kafka.tools.ConfigCommand --bootstrap-server "${bootstrap}" \
      --command-config "${ADMIN_CONFIG}" --alter --entity-type users --entity-name "$1" \
      --add-config "${mechanism}=[password=$2]" >&2
  done
  log "SCRAM-SHA-256 and SCRAM-SHA-512 credentials of '$1' set"
}

cmd_client_cert() {
  [[ $# -eq 1 ]] || die "usage: kafka.sh client-cert NAME"
  check_credential "$1" "certificate name"
  require_secure
  issue_client_cert "$1" || die "openssl could not issue a certificate for '$1'"
  echo "${SECURE_DIR}/$1.pem"
  echo "${SECURE_DIR}/$1.key"
}
