ls -la
cd ~/src/shop
mysql -h db.internal -u app -p'mBmoRHoeaPLIW3' shop < dump.sql
pg_dump --dbname=shop --file=shop.sql
aws configure set aws_secret_access_key riF3cvorGo9acIM9/UZ7xrYRV85TOZ0bWgJp85L3
aws configure set region eu-west-1
redis-cli -h cache.internal --password yZVWSKVpVFd8!RUL6d ping
git log --oneline | head
docker login -u shopops --password-stdin < ~/.docker-pass
kubectl get pods -n shop
