#!/bin/sh
# First-start setup of the trial Garage in docker/compose.yaml, through Garage's admin API:
# give the single node a role, import the access key FileMetadataSync is configured with, and
# create its bucket. Every step is skipped when already done, so it runs at every `up`.
# Needs: sh, curl, jq. Environment: GARAGE_ADMIN (http://garage:3903), GARAGE_ADMIN_TOKEN,
# S3_KEY_ID, S3_SECRET, S3_BUCKET.
set -eu

api() {  # api METHOD PATH [JSON]
  curl -fsS -X "$1" -H "Authorization: Bearer $GARAGE_ADMIN_TOKEN" -H "Content-Type: application/json" \
    ${3:+--data "$3"} "$GARAGE_ADMIN/v2/$2"
}

echo "waiting for Garage's admin API at $GARAGE_ADMIN"
i=0
until api GET GetClusterStatus >/dev/null 2>&1; do
  i=$((i + 1)); [ "$i" -lt 60 ] || { echo "Garage did not answer" >&2; exit 1; }
  sleep 1
done

if [ "$(api GET GetClusterLayout | jq '.roles | length')" = 0 ]; then
  node=$(api GET GetClusterStatus | jq -r '.nodes[0].id')
  echo "assigning a role to node $node"
  api POST UpdateClusterLayout "{\"roles\":[{\"id\":\"$node\",\"zone\":\"dc1\",\"capacity\":100000000000,\"tags\":[]}]}" >/dev/null
  version=$(api GET GetClusterLayout | jq '.version + 1')
  api POST ApplyClusterLayout "{\"version\":$version}" >/dev/null
fi

if ! api GET "GetKeyInfo?id=$S3_KEY_ID" >/dev/null 2>&1; then
  echo "importing access key $S3_KEY_ID"
  api POST ImportKey "{\"accessKeyId\":\"$S3_KEY_ID\",\"secretAccessKey\":\"$S3_SECRET\",\"name\":\"filemetasync\"}" >/dev/null
fi

if info=$(api GET "GetBucketInfo?globalAlias=$S3_BUCKET" 2>/dev/null); then
  bucket=$(echo "$info" | jq -r .id)
else
  echo "creating bucket $S3_BUCKET"
  bucket=$(api POST CreateBucket "{\"globalAlias\":\"$S3_BUCKET\"}" | jq -r .id)
fi
api POST AllowBucketKey \
  "{\"bucketId\":\"$bucket\",\"accessKeyId\":\"$S3_KEY_ID\",\"permissions\":{\"read\":true,\"write\":true,\"owner\":true}}" >/dev/null
echo "Garage is ready: bucket $S3_BUCKET, key $S3_KEY_ID"
