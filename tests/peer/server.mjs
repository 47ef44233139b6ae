// OAuth2/OIDC test peer for planet_async, built on oidc-provider. Loopback test use only.
// Env knobs:
//   PORT            listen port on 127.0.0.1 (0 = any free port)
//   AT_TTL          access token lifetime, integer seconds (default 60)
//   RT_TTL          refresh token lifetime, integer seconds (default 86400)
//   API_AUDIENCE    resource / JWT `aud` (default https://api.planet.com/)
//   AT_FORMAT       jwt (RFC 9068, cannot be introspected/revoked) | opaque (default jwt)
//   RT_ALWAYS=1     issue refresh tokens even without offline_access
//   PKJWT_JWKS      public JWKS file; enables the private_key_jwt clients `service-pkjwt` and
//                   `web-pkjwt` (a web service's login)
//   WEB_REDIRECT_URIS  comma-separated redirect URIs; registers the confidential web client
//                   `web-fleet` (secret `web-fleet-secret`) for the replicas of a web service
//   TOKEN_DELAY_MS  initial delay before /token is handled (change it later via /__config)
//   JWKS_AS_JSON=1  serve /jwks as application/json (the planet CLI wants that)
//   DEBUG_OP=1      log error details to stderr
//   PLANET_SCOPES=1 accept Planet's user scopes (`planet offline_access`, no `openid`) as Planet's
//                   login does: a `planet` scope, and a login's nonce ignored without `openid`
// Test-only endpoints: GET /__stats, GET /__reset (zeroes the counters and refresh times),
//   GET /__config[?token_delay_ms=N] (sets the delay, returns the current config).
// Once listening, prints one JSON line {"issuer": ..., "port": ...} to stdout.
import * as http from 'node:http';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import Provider, { errors } from 'oidc-provider';
import MemoryAdapter from 'oidc-provider/lib/adapters/memory_adapter.js';

function intEnv(name, fallback) {
  const raw = process.env[name] ?? String(fallback);
  if (!/^\d+$/.test(raw)) {
    console.error(`${name} must be a non-negative integer, got ${JSON.stringify(raw)}`);
    process.exit(2);
  }
  return parseInt(raw, 10);
}

const RT_TTL = intEnv('RT_TTL', 86400);
const PORT = intEnv('PORT', 0);
const API = process.env.API_AUDIENCE ?? 'https://api.planet.com/';
const API_SCOPES = 'api:read api:write';
const AT_FORMAT = process.env.AT_FORMAT ?? 'jwt';
const config = {
  token_delay_ms: intEnv('TOKEN_DELAY_MS', 0), at_ttl: intEnv('AT_TTL', 60),
  // > 0: token responses with a refresh token say how long it lasts, as Keycloak's do
  refresh_expires_in: 0,
  token_fail_next: 0, // > 0: that many /token requests are answered 503 before reaching the provider
};

// oidc-provider's in-memory adapter keeps its records in an LRU of 1,000 entries, and a login
// leaves several (interaction, session, grant, code, refresh token, indexes): with 1,000 users
// logged in, the first 800 users' refresh tokens were dropped and each one's next refresh was an
// invalid_grant. The same adapter over this store keeps every record until it expires (expired
// ones are swept every 10,000 writes).
class ExpiringStore {
  #entries = new Map();

  #writes = 0;

  get(key) {
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.expiry !== undefined && entry.expiry <= Date.now()) {
      this.#entries.delete(key);
      return undefined;
    }
    return entry.value;
  }

  set(key, value, options) {
    const expiry = typeof options?.maxAge === 'number' ? Date.now() + options.maxAge : undefined;
    this.#entries.set(key, { value, expiry });
    this.#writes += 1;
    if (this.#writes % 10000 === 0) {
      const now = Date.now();
      for (const [k, entry] of this.#entries) {
        if (entry.expiry !== undefined && entry.expiry <= now) this.#entries.delete(k);
      }
    }
  }

  delete(key) {
    this.#entries.delete(key);
  }
}
const store = new ExpiringStore();

// fresh signing key on every start
const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });

const service = { grant_types: ['client_credentials'], response_types: [], redirect_uris: [] };
const clients = [
  { // public app: auth code + PKCE, device code, refresh
    client_id: 'native-app', application_type: 'native', token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/callback', 'http://localhost/callback'], // loopback: any port allowed
  },
  { // a web service: confidential, auth code + PKCE; its callback is never fetched in tests
    client_id: 'web-app', client_secret: 'web-app-secret', token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'],
    redirect_uris: ['https://app.example/callback', 'https://app.example/auth/callback'],
  },
  {
    client_id: 'service-basic', client_secret: 'service-basic-secret',
    token_endpoint_auth_method: 'client_secret_basic', ...service,
  },
  {
    client_id: 'service-post', client_secret: 'service-post-secret',
    token_endpoint_auth_method: 'client_secret_post', ...service,
  },
];
if (process.env.PKJWT_JWKS) {
  // token_endpoint_auth_signing_alg is left unset so any alg in clientAuthSigningAlgValues
  // (RS256 and ES256 here) is accepted; the key is picked by the assertion's kid.
  clients.push({
    client_id: 'service-pkjwt', token_endpoint_auth_method: 'private_key_jwt',
    jwks: JSON.parse(fs.readFileSync(process.env.PKJWT_JWKS, 'utf8')), ...service,
  });
  clients.push({ // a web service that proves itself with a signed assertion
    client_id: 'web-pkjwt', token_endpoint_auth_method: 'private_key_jwt',
    jwks: JSON.parse(fs.readFileSync(process.env.PKJWT_JWKS, 'utf8')),
    grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'],
    redirect_uris: ['https://app.example/callback'],
  });
}
if (process.env.WEB_REDIRECT_URIS) {
  clients.push({ // the replicas of a web service, each with its own callback
    client_id: 'web-fleet', client_secret: 'web-fleet-secret',
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'],
    redirect_uris: process.env.WEB_REDIRECT_URIS.split(','),
  });
}

const server = http.createServer();
server.listen(PORT, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients,
    adapter: (model) => new MemoryAdapter(model, store),
    jwks: { keys: [{ ...rsa, use: 'sig', alg: 'RS256', kid: 'rs256-1' }] },
    cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
    scopes: process.env.PLANET_SCOPES === '1'
      ? ['openid', 'offline_access', 'planet'] : ['openid', 'offline_access'],
    enabledJWA: { clientAuthSigningAlgValues: ['RS256', 'PS256', 'ES256'] }, // client assertion algs
    pkce: { required: () => true }, // v9 only does S256
    features: {
      devInteractions: { enabled: true },
      deviceFlow: { enabled: true },
      clientCredentials: { enabled: true },
      revocation: { enabled: true },
      introspection: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // clients need not send `resource`: everything targets the API
        defaultResource: async (ctx, client, oneOf) => (oneOf ? oneOf[0] : API),
        useGrantedResource: async () => true,
        getResourceServerInfo: async (ctx, resource) => {
          if (resource !== API) throw new errors.InvalidTarget();
          return {
            scope: API_SCOPES, audience: API, accessTokenTTL: config.at_ttl,
            accessTokenFormat: AT_FORMAT, jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    // /auth keeps offline_access only with prompt=consent; RT_ALWAYS=1 skips that requirement
    issueRefreshToken: async (ctx, client, code) => client.grantTypeAllowed('refresh_token')
      && (process.env.RT_ALWAYS === '1' || code.scopes.has('offline_access')),
    rotateRefreshToken: true,
    ttl: {
      AccessToken: () => config.at_ttl, ClientCredentials: () => config.at_ttl, RefreshToken: RT_TTL,
      AuthorizationCode: 60, DeviceCode: 600, IdToken: 3600,
      Interaction: 3600, Session: 86400, Grant: 86400,
    },
  });
  // the dev login pages pull a Google web font; drop it so browsers stay on loopback
  provider.use(async (ctx, next) => {
    await next();
    if (typeof ctx.body === 'string' && ctx.body.includes('fonts.googleapis.com')) {
      ctx.body = ctx.body.replace(/@import url\(https:\/\/fonts\.googleapis\.com[^)]*\);?/g, '');
    }
  });
  if (process.env.PLANET_SCOPES === '1') {
    provider.use(async (ctx, next) => {
      // oidc-provider refuses a nonce without `openid`; an OAuth2-only login has no use for it
      if (ctx.path === '/auth' && ctx.query.nonce !== undefined
          && !String(ctx.query.scope ?? '').split(' ').includes('openid')) {
        const { nonce, ...rest } = ctx.query;
        ctx.query = rest;
      }
      await next();
    });
  }
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.path === '/token' && config.refresh_expires_in > 0 && ctx.body?.refresh_token) {
      ctx.body = { ...ctx.body, refresh_expires_in: config.refresh_expires_in };
    }
  });
  if (process.env.JWKS_AS_JSON === '1') {
    provider.use(async (ctx, next) => {
      await next();
      if (ctx.path === '/jwks') ctx.type = 'application/json';
    });
  }
  if (process.env.DEBUG_OP) {
    for (const ev of ['server_error', 'grant.error', 'authorization.error', 'introspection.error', 'revocation.error']) {
      provider.on(ev, (ctx, err) => console.error(ev, err?.message, err?.error_detail ?? ''));
    }
  }

  // counters so tests can assert how many token requests really reached the server; `refreshed`
  // has the time (ms since the epoch) of each successful refresh grant, per user (`sub`)
  const stats = { grant_success: {}, grant_error: {}, refreshed: {}, injected_failures: 0, introspections: 0 };
  provider.on('grant.success', (ctx) => {
    const g = ctx.oidc.params.grant_type;
    stats.grant_success[g] = (stats.grant_success[g] ?? 0) + 1;
    const sub = ctx.oidc.entities.RefreshToken?.accountId;
    if (g === 'refresh_token' && sub !== undefined) {
      (stats.refreshed[sub] ??= []).push(Date.now());
    }
  });
  provider.on('grant.error', (ctx, err) => {
    const k = `${ctx.oidc?.params?.grant_type}:${err?.error}`;
    stats.grant_error[k] = (stats.grant_error[k] ?? 0) + 1;
  });

  const sendJson = (res, status, body) => {
    res.statusCode = status;
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(body));
  };
  const cb = provider.callback();
  server.on('request', (req, res) => {
    const url = new URL(req.url, issuer);
    if (url.pathname === '/__stats') { sendJson(res, 200, stats); return; }
    if (url.pathname === '/__reset') {
      stats.grant_success = {}; stats.grant_error = {}; stats.refreshed = {};
      stats.injected_failures = 0; stats.introspections = 0; config.token_fail_next = 0;
      sendJson(res, 200, {}); return;
    }
    if (url.pathname === '/__config') {
      // token_delay_ms, at_ttl and refresh_expires_in can change at run time, so one peer serves a whole test session
      for (const key of ['token_delay_ms', 'at_ttl', 'refresh_expires_in', 'token_fail_next']) {
        const value = url.searchParams.get(key);
        if (value === null) continue;
        if (!/^\d+$/.test(value)) { sendJson(res, 400, { error: `${key} must be a non-negative integer` }); return; }
        config[key] = parseInt(value, 10);
      }
      sendJson(res, 200, { ...config, rt_ttl: RT_TTL, at_format: AT_FORMAT, api_audience: API });
      return;
    }
    if (url.pathname === '/token/introspection') stats.introspections += 1;
    if (config.token_fail_next > 0 && url.pathname === '/token') {
      // a fault a real server shows on a bad day: the request never reaches the provider
      config.token_fail_next -= 1;
      stats.injected_failures = (stats.injected_failures ?? 0) + 1;
      sendJson(res, 503, { error: 'temporarily_unavailable' }); return;
    }
    if (config.token_delay_ms > 0 && url.pathname === '/token') {
      setTimeout(() => cb(req, res), config.token_delay_ms); return;
    }
    cb(req, res);
  });
  console.log(JSON.stringify({ issuer, port }));
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections?.(); // keep-alive sockets would otherwise hold close() open
  });
}
