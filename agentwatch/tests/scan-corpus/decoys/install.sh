#!/bin/sh
mkdir -p /opt/shop
docker run -p 8080:80 -p 5432:5432 shop
mysql -u root -p shop
pip install --password-manager keyring shop
