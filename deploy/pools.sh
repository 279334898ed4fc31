#!/bin/sh
# Sets the pipeline's concurrency pools on the Dagster instance ($DAGSTER_HOME/dagster.yaml): run once per
# instance, from any host or pod that has the instance's configuration. Argument: the ingest pool's limit.
set -eu
ingest_limit="${1:-4}"
dagster instance concurrency set provider_submission 1
dagster instance concurrency set ingest_downloads "$ingest_limit"
dagster instance concurrency set lines_compaction 1
dagster instance concurrency set words_compaction 1
