#!/bin/sh
# purge the cache (global key, old account)
curl -X POST "https://api.cloudflare.com/client/v4/zones/aac1a2385f295e7927668365f9e4fcee/purge_cache" \
  -H "X-Auth-Email: ops@shop.io" \
  -H "X-Auth-Key: cb867fabc94029c9f4da58dd141e397563cf9" \
  --data '{"purge_everything":true}'
