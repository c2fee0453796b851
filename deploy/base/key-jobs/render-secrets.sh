#!/bin/sh
# Writes the rotated key files as Secret manifests for the publish step
# (kubectl apply): vault-keys gets all four files, ingest-keys only the two
# that ingest may have. The kubelet then refreshes the files in every ingest
# pod and ingest reloads them without a restart.
set -eu
umask 077
secret() {
    name=$1
    shift
    printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\ntype: Opaque\ndata:\n' "$name"
    for file in "$@"; do
        printf '  %s: %s\n' "$file" "$(base64 -w0 "$KEYS_DIR/$file")"
    done
}
{
    secret vault-keys tokenization.json recovery-public.json recovery-private.json audit-key.json
    echo ---
    secret ingest-keys tokenization.json recovery-public.json
} >"$KEYS_DIR/../secrets.yaml"
