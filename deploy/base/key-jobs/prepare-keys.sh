#!/bin/sh
# Copies the mounted vault-keys Secret (read-only, root-owned) into the job's
# own writable key directory, owned by the job's user, mode 0600.
set -eu
umask 077
mkdir -p "$KEYS_DIR"
for file in tokenization.json recovery-public.json recovery-private.json audit-key.json; do
    cat "/secrets/vault-keys/$file" >"$KEYS_DIR/$file"
done
chmod 644 "$KEYS_DIR/recovery-public.json"
