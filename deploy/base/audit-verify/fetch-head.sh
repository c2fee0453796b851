#!/bin/sh
# The head the previous run stored (none on the first run: verify then checks
# the log as it is and records its first head).
set -eu
if aws s3api head-object --bucket "$AUDIT_HEAD_BUCKET" --key "$AUDIT_HEAD_PREFIX/latest" >/dev/null 2>&1; then
    aws s3 cp --only-show-errors "s3://$AUDIT_HEAD_BUCKET/$AUDIT_HEAD_PREFIX/latest" /work/previous-head
    echo "audit-verify: checking against the head stored in s3://$AUDIT_HEAD_BUCKET/$AUDIT_HEAD_PREFIX/latest"
else
    : >/work/previous-head
    echo "audit-verify: no head stored yet in s3://$AUDIT_HEAD_BUCKET/$AUDIT_HEAD_PREFIX/: this run records the first"
fi
