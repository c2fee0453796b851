#!/bin/sh
# Stores the new head twice, each version locked (Object Lock, compliance
# mode) for AUDIT_HEAD_RETENTION_DAYS: under its date, and as "latest" for the
# next run (the bucket keeps every locked version of it).
set -eu
until=$(date -u -d "+${AUDIT_HEAD_RETENTION_DAYS} days" +%Y-%m-%dT%H:%M:%SZ)
for key in "$AUDIT_HEAD_PREFIX/$(date -u +%Y-%m-%d)" "$AUDIT_HEAD_PREFIX/latest"; do
    aws s3api put-object --bucket "$AUDIT_HEAD_BUCKET" --key "$key" --body /work/head \
        --object-lock-mode COMPLIANCE --object-lock-retain-until-date "$until" >/dev/null
done
echo "audit-verify: head $(cat /work/head) stored in s3://$AUDIT_HEAD_BUCKET/$AUDIT_HEAD_PREFIX/, locked until $until"
