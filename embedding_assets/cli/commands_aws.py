"""`aws create-table` and `aws create-buckets`: the AWS backends set up."""

from __future__ import annotations

import argparse
import sys

from embedding_assets.domain.settings import Settings


def cmd_aws_create_table(args: argparse.Namespace, settings: Settings) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from resources.receipt_store.dynamodb_table import create_table

    name = args.table or settings.dynamodb_table
    if not name:
        print("no table named: pass --table or set DYNAMODB_TABLE_NAME", file=sys.stderr)
        return 2
    try:
        created = create_table(name, endpoint_url=settings.aws_endpoint_url)
    except (BotoCoreError, ClientError) as exc:
        print(f"cannot create table {name}: {exc}", file=sys.stderr)
        return 1
    print(f"table {name}: " + ("created in the seed layout (PK/SK, GSI1-GSI4, GSITYPE)" if created
                               else "already exists, left as it is"))
    return 0


def cmd_aws_create_buckets(args: argparse.Namespace, settings: Settings) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from resources.object_store.s3 import create_buckets

    requests_bucket = args.requests_bucket or settings.s3_bucket
    chroma_bucket = args.chroma_bucket or settings.chromadb_bucket
    if not requests_bucket or not chroma_bucket:
        print("no buckets named: pass --requests-bucket and --chroma-bucket or set S3_BUCKET and CHROMADB_BUCKET",
              file=sys.stderr)
        return 2
    names = [requests_bucket, chroma_bucket]
    try:
        created = create_buckets(names, endpoint_url=settings.aws_endpoint_url)
    except (BotoCoreError, ClientError) as exc:
        print(f"cannot create buckets {', '.join(names)}: {exc}", file=sys.stderr)
        return 1
    for name in dict.fromkeys(names):
        print(f"bucket {name}: {'created' if name in created else 'already exists'}")
    return 0
