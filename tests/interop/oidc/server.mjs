// node-oidc-provider as a strict OpenID provider for tokend's interoperability test:
// refresh tokens rotate on every use and a replay revokes the grant; offline_access
// (hence a refresh token) is granted only with prompt=consent (OpenID Connect Core §11);
// access tokens live ACCESS_TTL seconds; the development login and consent pages stand
// in for a person. Environment: PORT, CLIENT_SECRET, ACCESS_TTL.
//
// With M2M_SECRET and M2M_PUBLIC_KEY (a PEM file) it also has two machine clients for
// the client-credentials grant (run_oidc_m2m.py): `m2m-basic`, authenticated by
// client_secret_basic, and `m2m-jwt`, by private_key_jwt with that public key.
import { createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;

const machines = [];
if (process.env.M2M_PUBLIC_KEY) {
  const jwk = createPublicKey(readFileSync(process.env.M2M_PUBLIC_KEY)).export({ format: 'jwk' });
  const machine = { grant_types: ['client_credentials'], response_types: [], redirect_uris: [], scope: 'api:read' };
  machines.push(
    { ...machine, client_id: 'm2m-basic', client_secret: process.env.M2M_SECRET, token_endpoint_auth_method: 'client_secret_basic' },
    { ...machine, client_id: 'm2m-jwt', token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [jwk] } },
  );
}

const provider = new Provider(issuer, {
  clients: [...machines, {
    client_id: 'tokend',
    client_secret: process.env.CLIENT_SECRET,
    application_type: 'native',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    // RFC 8252 §7.3: any port on the loopback address.
    redirect_uris: ['http://127.0.0.1/callback'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  scopes: ['openid', 'offline_access', 'api:read'],
  features: {
    devInteractions: { enabled: true },
    introspection: { enabled: true },
    clientCredentials: { enabled: true },
  },
  rotateRefreshToken: true,
  ttl: {
    AccessToken: Number(process.env.ACCESS_TTL || 5),
    ClientCredentials: Number(process.env.ACCESS_TTL || 5),
    RefreshToken: 3600,
    Grant: 3600,
    Session: 3600,
    Interaction: 600,
    AuthorizationCode: 60,
  },
  findAccount: (ctx, id) => ({ accountId: id, claims: () => ({ sub: id }) }),
});
provider.on('grant.revoked', (ctx, grantId) => console.log(`grant revoked: ${grantId}`));
provider.on('server_error', (ctx, err) => console.log(`server error: ${err}`));
provider.listen(port, '127.0.0.1', () => console.log(`oidc-provider on ${issuer}`));
