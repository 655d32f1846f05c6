import os

DEBUG = False
SECRET_KEY = "wtr+BCIP6Ri9!9-mno!tdI4cx1-=g1jpufqvoO17#HgrtI7HOu"
DATABASE_URL = os.environ["DATABASE_URL"]
STRIPE_KEY = "sk_live_mCncBGaJQPynZxPpHCcGKr5L"
ALLOWED_HOSTS = ["shop.io"]
