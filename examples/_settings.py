"""Where the examples connect: Planet's servers, unless the environment says otherwise.

Every example takes its endpoints from here, so that each runs unchanged against Planet or, in
this project's tests, against a local authorization server and API. In your own program, write
the values in place.

    PLANET_ASYNC_EXAMPLE_API              the URL each example requests (Planet's Basemaps API)
    PLANET_ASYNC_EXAMPLE_ISSUER           the authorization server of user logins (Planet's)
    PLANET_ASYNC_EXAMPLE_CLIENT_ID        your registered application's client id (user logins)
    PLANET_ASYNC_EXAMPLE_SCOPES           scopes of user logins ("planet offline_access")
    PLANET_ASYNC_EXAMPLE_DEVICE_INTERVAL  device login poll interval, for servers that send none
    PLANET_ASYNC_EXAMPLE_M2M_ISSUER       the authorization server of service accounts (Planet's)

Credentials come from the variables Planet documents: PL_AUTH_CLIENT_ID and
PL_AUTH_CLIENT_SECRET for a service account, PL_AUTH_API_KEY for an API key.
"""

import os
from urllib.parse import urlsplit

from planet_async import PLANET_API_ORIGINS, PLANET_M2M_ISSUER

API_URL = os.environ.get("PLANET_ASYNC_EXAMPLE_API", "https://api.planet.com/basemaps/v1/mosaics")
ISSUER = os.environ.get("PLANET_ASYNC_EXAMPLE_ISSUER", "https://login.planet.com/")
CLIENT_ID = os.environ.get("PLANET_ASYNC_EXAMPLE_CLIENT_ID", "your-registered-client-id")
SCOPES = os.environ.get("PLANET_ASYNC_EXAMPLE_SCOPES", "planet offline_access").split()
DEVICE_INTERVAL = float(os.environ.get("PLANET_ASYNC_EXAMPLE_DEVICE_INTERVAL", "5"))
M2M_ISSUER = os.environ.get("PLANET_ASYNC_EXAMPLE_M2M_ISSUER", PLANET_M2M_ISSUER)

# Credentials go only to allowlisted origins: Planet's by default (None). Any other API, such as
# a local one over http on 127.0.0.1, has to be listed.
_origin = "{0.scheme}://{0.netloc}".format(urlsplit(API_URL))
ALLOWED_ORIGINS = None if _origin in PLANET_API_ORIGINS else [_origin]
