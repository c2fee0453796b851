# Shared set-up for the benchmark and fault-run scripts. Sourced, not run:
#
#   source scripts/lib/runs.sh
#   runs_init localstack ingest vault bench   # services, release build, work dir, keys
#
# After runs_init: $repo, $work (deleted on exit), $bin (release binaries),
# $work/vault-keys (a full key set; passphrase in $work/passphrase, scrypt cost
# 2^${SCRYPT_LOG_N:-14}), $work/keys (ingest's part of it: no private key), the services'
# environment (PGHOST…, AWS_ENDPOINT_URL…). Services already up in
# $PSEUDO_RUN_DIR are used as they are; otherwise they are started and stopped.
# Scripts add their own clean-up with `on_exit COMMAND`. CITUS=1 runs them on a
# Citus cluster (coordinator + ${CITUS_WORKERS:-2} workers; its own run
# directory): fresh_db makes each database on every node and distributes it.

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
_exit_hooks=()
on_exit() { _exit_hooks+=("$1"); }
_run_exit_hooks() {
    local hook
    for hook in "${_exit_hooks[@]}"; do eval "$hook" || true; done
}
trap _run_exit_hooks EXIT

runs_init() { # EMULATOR PRODUCT…
    local emulator=$1 product
    shift
    local citus_options=()
    if [ "$emulator" = localstack ]; then
        export PSEUDO_RUN_DIR=${PSEUDO_RUN_DIR_LOCALSTACK:-$repo/.run-localstack}
    else
        export PSEUDO_RUN_DIR=${PSEUDO_RUN_DIR:-$repo/.run}
    fi
    if [ "${CITUS:-0}" = 1 ]; then
        export PSEUDO_RUN_DIR=$PSEUDO_RUN_DIR-citus
        citus_options=(--citus "${CITUS_WORKERS:-2}")
    fi
    work=$(mktemp -d "${TMPDIR:-/tmp}/$(basename "$0").XXXXXX")
    on_exit 'rm -rf "$work"'
    if [ -f "$PSEUDO_RUN_DIR/env.sh" ] && ! (source "$PSEUDO_RUN_DIR/env.sh" && pg_isready -q &&
        curl -s -o /dev/null "$AWS_ENDPOINT_URL"); then
        echo "services in $PSEUDO_RUN_DIR are not answering (left from an earlier session?); restarting them" >&2
        scripts/services down >/dev/null 2>&1 || true
    fi
    if [ ! -f "$PSEUDO_RUN_DIR/env.sh" ]; then
        scripts/bootstrap
        scripts/services up --sqs "$emulator" "${citus_options[@]}" >/dev/null
        on_exit 'scripts/services down >/dev/null 2>&1'
    fi
    # shellcheck disable=SC1091
    source "$PSEUDO_RUN_DIR/env.sh"
    if [ "${PSEUDO_SQS_EMULATOR:-}" != "$emulator" ] && [ "$emulator" = localstack ]; then
        echo "warning: the emulator is ${PSEUDO_SQS_EMULATOR:-unknown}, not LocalStack" >&2
    fi
    for product in "$@"; do swift build -c release --product "$product" 2>&1 | tail -1 >&2; done
    bin=$(swift build -c release --show-bin-path)
    umask 077
    printf 'benchmark passphrase, not secret\n' >"$work/passphrase"
    "$bin/vault" keys init --offline --keys-dir "$work/vault-keys" --passphrase-file "$work/passphrase" \
        --scrypt-log-n "${SCRYPT_LOG_N:-14}" >/dev/null
    mkdir "$work/keys"
    cp "$work/vault-keys/tokenization.json" "$work/vault-keys/recovery-public.json" "$work/keys/"
}

fresh_db() { # NAME [VAULT_KEYS_DIR] → URL of a new, migrated database with those keys (default: the run's) registered
    local url="postgresql://$PGUSER@$PGHOST:$PGPORT/$1" port
    for port in "$PGPORT" ${PSEUDO_CITUS_WORKERS:-}; do
        PGOPTIONS="-c client_min_messages=warning" psql -qAt -p "$port" -d postgres \
            -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" >/dev/null
        if [ -n "${PSEUDO_CITUS_WORKERS:-}" ]; then psql -qAt -p "$port" -d "$1" -c "CREATE EXTENSION citus" >/dev/null; fi
    done
    "$bin/ingest" migrate --database-url "$url" >/dev/null 2>&1
    if [ -n "${PSEUDO_CITUS_WORKERS:-}" ]; then
        psql -qAt -d "$1" -c "SELECT citus_set_coordinator_host('$PGHOST', $PGPORT)" >/dev/null
        for port in $PSEUDO_CITUS_WORKERS; do psql -qAt -d "$1" -c "SELECT citus_add_node('$PGHOST', $port)" >/dev/null; done
        "$bin/ingest" distribute --database-url "$url" >/dev/null
    fi
    "$bin/vault" keys register --keys-dir "${2:-$work/vault-keys}" --database-url "$url" --reason "benchmark set-up" >/dev/null
    echo "$url"
}

create_queue() { # NAME [ATTRIBUTES] → queue URL
    aws --endpoint-url "$AWS_ENDPOINT_URL" sqs create-queue --queue-name "$1" ${2:+--attributes "$2"} \
        --output text --query QueueUrl
}

queue_depth() { # URL → visible + in flight
    aws --endpoint-url "$AWS_ENDPOINT_URL" sqs get-queue-attributes --queue-url "$1" \
        --attribute-names ApproximateNumberOfMessages ApproximateNumberOfMessagesNotVisible --output json |
        python3 -c 'import json,sys; a=json.load(sys.stdin)["Attributes"]; print(int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"]))'
}

now() { date +%s.%N; }

# Sends FILE's lines to QUEUE at RATE messages/s in the background (10 per
# SendMessageBatch); sets producer_pid.
start_producer() { # QUEUE RATE FILE
    python3 - "$1" "$2" "$3" >"$work/producer.log" 2>&1 <<'PY' &
import sys, time, boto3
queue, rate, path = sys.argv[1], float(sys.argv[2]), sys.argv[3]
sqs = boto3.client("sqs")
lines = open(path).read().splitlines()
start = time.monotonic()
for index in range(0, len(lines), 10):
    delay = start + index / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    sqs.send_message_batch(QueueUrl=queue, Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(lines[index:index + 10])])
print("sent", len(lines))
PY
    producer_pid=$!
    on_exit 'kill "$producer_pid" 2>/dev/null'
}

# What a database holds, as one line: rows, quarantined, and a digest of the
# rows' content (create_date aside: a file run dates rows differently from SQS).
content_summary() { # URL
    psql -d "$1" -qAt -F ' ' -c "
        SELECT (SELECT count(*) FROM user_logins), (SELECT count(*) FROM quarantine),
               (SELECT md5(coalesce(string_agg(concat_ws('|', user_id, device_type, masked_ip, masked_device_id,
                                                         coalesce(locale, '<null>'), app_version), E'\n'
                                               ORDER BY user_id, device_type, masked_ip, masked_device_id, locale, app_version), ''))
                FROM user_logins)"
}

# The reference result for a file of bodies: the same keys, `ingest run --from-file`.
reference_summary() { # FILE
    local url
    url=$(fresh_db "reference_$$")
    "$bin/ingest" run --from-file "$1" --keys-dir "$work/keys" --database-url "$url" 2>/dev/null
    content_summary "$url"
}
