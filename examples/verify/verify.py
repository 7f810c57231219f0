"""Is this request from portcullis, and for whom? (PyJWT 2.8+ with cryptography)"""
import json
import os
import sys

import jwt  # PyJWT

JWKS_URL = os.environ["PORTCULLIS_JWKS_URL"]  # https://gateway.example/.well-known/jwks.json
ISSUER = os.environ["PORTCULLIS_ISSUER"]  # the gateway's [tokens] issuer
AUDIENCE = os.environ["BACKEND_AUDIENCE"]  # this backend's assertion audience
HEADER = "x-portcullis-assertion"

# The gateway's public keys, fetched again for a kid not seen yet (rotation).
jwks = jwt.PyJWKClient(JWKS_URL)


class Refused(Exception):
    pass


def gateway_identity(headers, method, path):
    """The claims of the request's assertion, or Refused. Take the user from
    these claims, never from X-User-Id and the other identity headers."""
    token = headers.get(HEADER)
    if not token:
        raise Refused("no assertion: the request did not come through the gateway")
    try:
        if jwt.get_unverified_header(token).get("typ") != "portcullis-assertion+jwt":
            raise Refused("not a portcullis assertion")
        key = jwks.get_signing_key_from_jwt(token)
        claims = jwt.decode(
            token,
            key.key,
            algorithms=["EdDSA", "ES256", "RS256"],
            issuer=ISSUER,
            audience=AUDIENCE,
            leeway=5,  # seconds of clock skew between gateway and backend
            options={"require": ["iss", "aud", "iat", "exp"]},
        )
    except jwt.PyJWTError as e:
        raise Refused(f"invalid assertion: {e}") from e
    # On a route with assertion_binds_request the assertion names its request.
    if "htm" in claims and (claims["htm"] != method or claims["htu"] != path):
        raise Refused("the assertion is for another request")
    return claims  # no "sub": a request without a user ("auth" names the route's mode)


if __name__ == "__main__":
    # For the test suite: {"headers": {...lower-case names...}, "method", "path"}.
    request = json.load(sys.stdin)
    try:
        claims = gateway_identity(request["headers"], request["method"], request["path"])
    except Refused as e:
        sys.exit(f"refused: {e}")
    print(json.dumps(claims))
