#!/bin/sh
# Verifies the whole log (every hash and MAC) and that the previous head is
# still in it, unchanged; writes the new head for store-head. Exit 65 when the
# log was altered or cut: the job fails and AuditVerifyFailed fires.
set -eu
previous=$(cat /work/previous-head)
if [ -n "$previous" ]; then
    vault audit verify --head "$previous" --json >/work/verify.json
else
    vault audit verify --json >/work/verify.json
fi
sed -n 's/.*"head":"\([0-9]*:[0-9a-f]*\)".*/\1/p' /work/verify.json >/work/head
[ -s /work/head ] || { echo "audit-verify: vault printed no head" >&2; exit 1; }
cat /work/verify.json
