// Is this request from portcullis, and for whom? (jose 6)
import { pathToFileURL } from 'node:url';
import { createRemoteJWKSet, jwtVerify } from 'jose';

const ISSUER = process.env.PORTCULLIS_ISSUER; // the gateway's [tokens] issuer
const AUDIENCE = process.env.BACKEND_AUDIENCE; // this backend's assertion audience
const HEADER = 'x-portcullis-assertion';

// The gateway's public keys, fetched again for a kid not seen yet (rotation).
const jwks = createRemoteJWKSet(new URL(process.env.PORTCULLIS_JWKS_URL));

export class Refused extends Error {}

// The claims of the request's assertion, or Refused. Take the user from
// these claims, never from X-User-Id and the other identity headers.
export async function gatewayIdentity(headers, method, path) {
  const token = headers[HEADER];
  if (!token) throw new Refused('no assertion: the request did not come through the gateway');
  let claims;
  try {
    ({ payload: claims } = await jwtVerify(token, jwks, {
      issuer: ISSUER,
      audience: AUDIENCE,
      typ: 'portcullis-assertion+jwt',
      algorithms: ['EdDSA', 'ES256', 'RS256'],
      clockTolerance: 5, // seconds of clock skew between gateway and backend
      requiredClaims: ['iat', 'exp'],
    }));
  } catch (e) {
    throw new Refused(`invalid assertion: ${e.code ?? e.message}`);
  }
  // On a route with assertion_binds_request the assertion names its request.
  if ('htm' in claims && (claims.htm !== method || claims.htu !== path)) {
    throw new Refused('the assertion is for another request');
  }
  return claims; // no "sub": a request without a user ("auth" names the route's mode)
}

// For the test suite: {"headers": {...lower-case names...}, "method", "path"} on stdin.
if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  const request = JSON.parse(Buffer.concat(chunks).toString());
  try {
    console.log(JSON.stringify(await gatewayIdentity(request.headers, request.method, request.path)));
  } catch (e) {
    if (!(e instanceof Refused)) throw e;
    console.error(`refused: ${e.message}`);
    process.exitCode = 1;
  }
}
