"""LocalStack ready hook (run by LocalStack's own Python, which has boto3):
creates login-queue and sends the sample messages, once per fresh volume."""
import pathlib

import boto3

QUEUE = "login-queue"
MESSAGES = pathlib.Path("/seed/messages.jsonl")

sqs = boto3.client("sqs", endpoint_url="http://localhost:4566", region_name="us-east-1",
                   aws_access_key_id="test", aws_secret_access_key="test")
queue_url = sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
bodies = [line for line in MESSAGES.read_text().splitlines() if line.strip()]
for start in range(0, len(bodies), 10):
    entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies[start:start + 10])]
    failed = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed", [])
    if failed:
        raise SystemExit(f"seeding {QUEUE}: {len(failed)} messages refused: {failed}")
print(f"seeded {QUEUE} with {len(bodies)} messages")
