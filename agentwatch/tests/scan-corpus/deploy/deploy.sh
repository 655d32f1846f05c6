#!/bin/sh
set -eu
export AWS_ACCESS_KEY_ID=AKIAFMJOYQXMINGPQC4G
export AWS_SECRET_ACCESS_KEY=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
export RAILWAY_TOKEN=4455b7c0-49ee-4580-add6-50bb93fbdba1
aws s3 sync ./dist s3://shop-assets
railway up --service web
